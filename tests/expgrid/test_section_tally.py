"""A running section's counts and best trial, kept per event (``expgrid.section_tally``), agree
with a scan of every trial after any sequence of trial starts, rows and ends."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from expgrid import records
from expgrid.records import ASHA_STOPPED, COMPLETED, DIVERGED, EARLY_STOPPED, FAILED, RUNNING, TrialRecord
from expgrid.section_tally import BestSoFar, Tally

ENDINGS = (COMPLETED, EARLY_STOPPED, ASHA_STOPPED, FAILED, DIVERGED)
# Few distinct values, so that ties between trials (and between a trial's epochs) are common.
SCORES = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 2.0]), st.none(), st.just(math.nan))

# An event: ("start", trial), ("rows", trial, scores) or ("end", trial, ending, scores).
EVENTS = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 5)),
    st.tuples(st.just("rows"), st.integers(0, 5), st.lists(SCORES, max_size=3)),
    st.tuples(st.just("end"), st.integers(0, 5), st.sampled_from(ENDINGS), st.lists(SCORES, max_size=3)),
)


def _add_rows(trial: TrialRecord, scores: list) -> None:
    for score in scores:
        trial.add_row({"epoch": trial.last_epoch + 1, **({} if score is None else {"score": score})})


def _scan(trials: list[TrialRecord]) -> tuple[int, int, int]:
    return (sum(t.ended is not None for t in trials), sum(t.status == RUNNING for t in trials),
            sum(t.status in (FAILED, DIVERGED) for t in trials))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(events=st.lists(EVENTS, max_size=40), mode=st.sampled_from(["max", "min"]),
       select=st.sampled_from(["last_epoch", "best_epoch"]), resumed=st.lists(SCORES, max_size=6))  # fmt: skip
def test_incremental_counts_and_best_equal_a_scan_of_every_trial(events, mode, select, resumed):
    trials = [TrialRecord(index=i, swept={"i": i}, config={}) for i in range(6)]
    for trial, score in zip(trials, resumed):  # a resumed section: some trials ended before
        _add_rows(trial, [score])
        trial.status, trial.ended = COMPLETED, 1.0
    tally, best = Tally(trials), BestSoFar(trials, "score", mode, select)
    assert best.best is records.best_trial(trials, "score", mode, select)
    for event in events:
        trial = trials[event[1]]
        tally.remove(trial)
        if event[0] == "start":  # a trial that had ended can run again (a retry, a recovery run)
            trial.status = RUNNING
        elif event[0] == "rows":
            _add_rows(trial, event[2])
        else:
            _add_rows(trial, event[3])
            trial.status, trial.ended = event[2], 2.0
        tally.add(trial)
        assert (tally.done, tally.running, tally.failed) == _scan(trials)
        if event[0] != "start":  # what SectionEvents offers: an ended trial, or rows of one that had ended
            changed_from = best.best, best.score
            changed = best.offer(trial)
            assert best.best is records.best_trial(trials, "score", mode, select)
            assert best.score == (None if best.best is None else best.best.score("score", mode, select))
            assert changed == (best.best is not changed_from[0] or best.score != changed_from[1])


def test_ties_go_to_the_earlier_trial_whatever_order_they_end_in():
    trials = [TrialRecord(index=i, swept={}, config={}, history=[{"epoch": 1, "score": 1.0}]) for i in range(3)]
    best = BestSoFar(trials, "score", "max", "last_epoch")
    assert best.best is None  # none has ended
    for i in (2, 0, 1):
        trials[i].status = COMPLETED
        best.offer(trials[i])
    assert best.best is trials[0]


def test_a_best_trial_that_runs_again_gives_way_at_the_next_end():
    a, b = (TrialRecord(index=i, swept={}, config={}, history=[{"epoch": 1, "score": s}], status=COMPLETED)
            for i, s in ((0, 2.0), (1, 1.0)))  # fmt: skip
    best = BestSoFar([a, b], "score", "max", "last_epoch")
    assert best.best is a
    a.status = RUNNING  # a retry: running trials do not compete
    b.add_row({"epoch": 2, "score": 0.5})
    assert best.offer(b) and best.best is b and best.score == 0.5
