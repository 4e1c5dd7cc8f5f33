"""The driver's cost per row does not grow with the number of trials in a section (issue 16).

A section's events (start, rows, end of each trial) are driven into ``SectionEvents`` with
synthetic rows, as the Tune adapter hands them over: real records files, the real MLflow
writer process and store, the progress line. The same work per trial at 1,000 and at 10,000
trials must cost about the same per row. The figure compared is a ratio between the two sizes
measured in one test, never a wall-clock threshold. Time is the driver process's CPU time (its
threads together: the event path, the MLflow feeder and reply threads; the writer process is
another process): on a loaded machine wall time favours short stretches of work, which fit in
one time slice. Each size's time per row is the median over ten equal chunks of its trials.
"""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path

from expgrid import interrupts, planning, records
from expgrid.progress import ProgressLine
from expgrid.runner import prepare
from expgrid.section_events import SectionEvents
from expgrid.tracking import Tracker, default_tracking_uri
from expgrid.wording import describe

SMALL, LARGE = 1_000, 10_000
ROWS = 3  # epochs per trial
CHUNKS = 10
# Constant cost per row gives 1; a scan of every trial per row (what this guards against) gave
# 10 at these sizes (cost ∝ trials). Headroom for a loaded machine and the larger heap's GC.
MAX_RATIO = 2.5


def _events(folder: Path, trials: int) -> tuple[SectionEvents, list[records.TrialRecord]]:
    folder.mkdir()
    study_file = folder / "scale.yaml"
    study_file.write_text(
        f"study: scale\ntrainable: toy\nmetric: score\ndefaults: {{epochs: {ROWS}}}\nsections:\n"
        f"  - id: s\n    grid: {{x: {list(range(trials // 10))}, y: {list(range(10))}}}\n"
    )
    study, spec = prepare(study_file)
    section = study.sections[0]
    plans = planning.plan_section(study, spec, section, {})
    trials_ = [records.TrialRecord(index=p.index, swept=p.swept, config=p.config) for p in plans]
    results = folder / "results"
    tracker = Tracker(default_tracking_uri(results), study.name, artifact_root=results / "mlartifacts")
    tracker.start_study(study.name, {})
    tracker.start_section(section.id, section.name, {})
    assert tracker.opened  # waits for the writer to open the store: its start-up is not the events' cost
    progress = ProgressLine("s", len(trials_), study.metric, io.StringIO())
    events = SectionEvents(study, section, trials_, results, tracker, progress, interrupts.StopRequest(),
                           describe=lambda t: describe(study, t, section.select))  # fmt: skip
    return events, trials_


def _seconds_per_row(events: SectionEvents, trials: list[records.TrialRecord]) -> list[float]:
    """Drive every trial through start, ``ROWS`` results and its end; seconds per row of each chunk."""
    chunk = len(trials) // CHUNKS
    per_row = []
    for first in range(0, len(trials), chunk):
        start = time.process_time()
        for trial in trials[first : first + chunk]:
            x, y = trial.swept["x"], trial.swept["y"]
            events.trial_started(trial.index)
            for epoch in range(1, ROWS + 1):
                score = (x * 7 + y * 3) % 101 / 100 * epoch  # ties between trials, on purpose
                events.trial_rows(trial.index, [{"epoch": epoch, "score": score, "loss": 1 - score}])
                events.results_received()
            events.trial_finished(trial.index, None)
        per_row.append((time.process_time() - start) / (chunk * ROWS))
    return per_row


def _run(folder: Path, trials: int) -> float:
    events, trial_records = _events(folder, trials)
    try:
        per_row = _seconds_per_row(events, trial_records)
    finally:
        events.rows.close()
        mirror = events.tracker.finish(wait=5.0)  # the mirror may lag at 10,000 trials: not measured here
    # Everything went where it goes: each trial's end and rows on disk, the progress line's counts
    # and best trial as a scan of all trials gives them.
    section = records.section_dir(events.results, "s")
    assert len((section / "trials.jsonl").read_text().splitlines()) == trials
    assert len((section / "rows.jsonl").read_text().splitlines()) == trials * ROWS
    study = events.study
    best = records.best_trial(trial_records, study.metric, study.mode, events.section.select)
    assert (events.progress.done, events.progress.running, events.progress.failed) == (trials, 0, 0)
    assert events.progress.best == describe(study, best, events.section.select)
    assert mirror.study_run_id is not None  # the writer wrote to the store while the events came
    return statistics.median(per_row)


def test_time_per_row_stays_flat_from_1000_to_10000_trials(tmp_path):
    _run(tmp_path / "warm-up", 100)  # imports and the store template: paid once, by neither size
    small = _run(tmp_path / "small", SMALL)
    large = _run(tmp_path / "large", LARGE)
    ratio = large / small
    print(f"CPU µs per row: {SMALL} trials {small * 1e6:.0f}, {LARGE} trials {large * 1e6:.0f}, ratio {ratio:.2f}")
    assert ratio < MAX_RATIO, f"time per row grew {ratio:.1f}× from {SMALL} to {LARGE} trials"
