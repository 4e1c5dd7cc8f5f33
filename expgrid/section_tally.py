"""A running section's counts and its best trial, kept up to date as trials change state, so
that an event costs the same in a section of ten trials as in one of 100,000.

The progress line needs them after every event; scanning every trial for each row received
(and recomputing the best over all trials at every trial's end) made a 10,000-trial section
spend more time on its progress line than on its trials.
"""

from __future__ import annotations

from collections.abc import Iterable

from expgrid.records import DIVERGED, FAILED, RUNNING, TrialRecord, best_trial
from expgrid.study_types import Selection


class Tally:
    """Trials done (ended), running and failed (failed or diverged). Around every change of a
    trial's ``status`` or ``ended``: :meth:`remove` before it, :meth:`add` after it."""

    def __init__(self, trials: Iterable[TrialRecord] = ()):
        self.done = self.running = self.failed = 0
        for trial in trials:
            self.add(trial)

    def _count(self, trial: TrialRecord, sign: int) -> None:
        self.done += sign * (trial.ended is not None)
        self.running += sign * (trial.status == RUNNING)
        self.failed += sign * (trial.status in (FAILED, DIVERGED))

    def add(self, trial: TrialRecord) -> None:
        self._count(trial, 1)

    def remove(self, trial: TrialRecord) -> None:
        self._count(trial, -1)


class BestSoFar:
    """:func:`expgrid.records.best_trial` over ``trials``, updated one trial at a time: call
    :meth:`offer` with each trial whose score may have changed (one that ended). Same rule:
    the best score among trials that were not failed or diverged, ties to the earlier index.

    The ended trial is compared with the current best only. Over all trials again only when
    the current best itself lost ground (it ran again, or ended again with other rows): rare.
    ``trials``: every trial of the section (the same objects the events change)."""

    def __init__(self, trials: Iterable[TrialRecord], metric: str, mode: str, select: Selection):
        self._trials = trials
        self.metric, self.mode, self.select = metric, mode, select
        self._sign = 1.0 if mode == "max" else -1.0
        self._recompute()

    def _score(self, trial: TrialRecord) -> float | None:
        return trial.score(self.metric, self.mode, self.select)

    def _recompute(self) -> None:
        self.best = best_trial(list(self._trials), self.metric, self.mode, self.select)
        self.score = None if self.best is None else self._score(self.best)

    def _beats(self, score: float, index: int) -> bool:
        assert self.best is not None and self.score is not None
        return (self._sign * score, -index) > (self._sign * self.score, -self.best.index)

    def offer(self, trial: TrialRecord) -> bool:
        """Take ``trial``'s current score into account; returns whether the best trial or its
        score changed."""
        before, before_score = self.best, self.score
        if self.best is not None and self._score(self.best) != self.score:
            self._recompute()  # the best itself changed since: it may no longer be the best
            return self.best is not before or self.score != before_score
        score = self._score(trial)
        if trial is self.best:
            if score is not None and self._sign * score >= self._sign * self.score:  # type: ignore[operator]
                self.score = score  # still ahead of every other trial
            else:
                self._recompute()
        elif score is not None and (self.best is None or self._beats(score, trial.index)):
            self.best, self.score = trial, score
        return self.best is not before or self.score != before_score
