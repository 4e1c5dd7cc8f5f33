"""The driver's side of a running section: what it hears of each trial, fanned out to the
records (``trials.jsonl``, ``rows.jsonl``, artifact files), the section log, MLflow and the
progress line.

The Tune adapter (cluster code) calls these methods as it decodes trials' messages
(``expgrid.wire``) and Tune's callbacks; this module imports nothing of Ray.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from expgrid import durable, interrupts, records, tracking
from expgrid.errors import EXIT_FAILED
from expgrid.logfiles import NoSectionLog, SectionLog
from expgrid.progress import ProgressLine
from expgrid.records import RUNNING, SCORED, TrialRecord
from expgrid.section_tally import BestSoFar, Tally
from expgrid.stopping import MLFLOW_STATUS
from expgrid.study_types import Section, Study
from expgrid.tracking import Tracker


class SectionEvents:
    """Receives trial events from the Ray adapter (its ``TrialEvents``); keeps records, progress
    and MLflow in step. ``describe``: a trial in words, for the progress line's best trial."""

    def __init__(self, study: Study, section: Section, trials: list[TrialRecord], results: Path,
                 tracker: Tracker, progress: ProgressLine, stop: interrupts.StopRequest,
                 describe: Callable[[TrialRecord], str]):  # fmt: skip
        self.study, self.section, self.trials = study, section, {t.index: t for t in trials}
        self.results, self.tracker, self.progress, self.stop = results, tracker, progress, stop
        self.describe = describe
        self.retries = 0
        # Set when the results' storage failed (a full disk): what to name, and the OS error.
        self.fault: OSError | None = None
        self.heard = False  # whether Tune has reported anything of this section's trials
        self.lost_checkpoints: set[int] = set()  # resumed trials whose checkpoint Tune had lost
        self.storage = ""  # where Tune writes trial checkpoints (set by the runner)
        self.log: SectionLog = NoSectionLog()  # the trainable's section log, set by the runner
        self.rows = records.RowLog(results, section.id)
        # Trials that ended before the driver was killed (a resumed section): Tune may run one
        # again if its end had not reached Tune's own saved state; the record already has it.
        self.ended_before: set[int] = set()
        # Kept as trials change state (never a scan of every trial per event): the progress
        # line's counts, and the best trial so far (a resumed section's ended trials count).
        self._tally = Tally(self.trials.values())
        self._best = BestSoFar(self.trials.values(), study.metric, study.mode, section.select)
        self._best_text = "" if self._best.best is None else describe(self._best.best)

    @property
    def best(self) -> TrialRecord | None:
        """The best trial so far (``records.best_trial`` of the section's trials, kept per event)."""
        return self._best.best

    def trial_started(self, index: int, at: float | None = None) -> None:
        self.heard = True
        if index in self.ended_before:
            return
        trial = self.trials[index]
        if trial.started is None:
            trial.started = at or time.time()
            # A resumed trial has rows already (from rows.jsonl): its run gets every one of them.
            self.tracker.start_trial(self.section.id, index, tracking.trial_run_name(self.section.id, index, trial.swept),
                                     trial.config, tracking.parent_tags(trial.parent), trial.started,
                                     history=trial.history)  # fmt: skip
        self._tally.remove(trial)
        trial.status = RUNNING
        self._tally.add(trial)
        self._redraw(False)

    @contextlib.contextmanager
    def _recording(self) -> Iterator[None]:
        """A record that cannot be written (a full disk, a permission) stops the study: the
        error goes on into Tune, which then neither registers the result's checkpoint (so a
        resumed trial reports that epoch again) nor goes on; the runner reports the error."""
        try:
            yield
        except OSError as e:
            self.storage_failed(e)
            raise

    def storage_failed(self, error: OSError) -> None:
        """Stop the study: nothing more can be recorded (see ``durable.storage_failure``)."""
        if self.fault is None:
            self.fault = error
            self.stop.request(f"{error.filename}: {error.strerror}", exit_code=EXIT_FAILED)

    def _trial_storage_failed(self, error: str | None) -> bool:
        """A trial that failed because its checkpoint could not be stored did not fail itself:
        it stops the study and stays unfinished (``--resume`` continues it once there is room)."""
        failure = durable.storage_failure(error, self.storage)
        if failure is not None:
            self.storage_failed(failure)
        return failure is not None

    def trial_rows(self, index: int, rows: list[dict[str, Any]]) -> None:
        if index in self.ended_before:
            return
        trial = self.trials[index]
        with self._recording():
            for row in rows:
                trial.add_row(row)
            self.rows.append_rows(index, rows)
        for row in rows:
            self.tracker.log_epoch(self.section.id, index, row)
        if trial.status in SCORED:  # rows of a trial that had ended: its score may have moved
            self._offer(trial)
        self._redraw(False)

    def trial_artifacts(self, index: int, files: dict[str, Any], epoch: int) -> None:
        if index in self.ended_before or not files:
            return
        with self._recording():
            written = records.write_artifacts(self.results, self.section.id, self.trials[index], files)
        self.tracker.log_trial_artifacts(self.section.id, index, written)

    def trial_stopped(self, index: int, reason: str) -> None:
        """The first reason counts: a trial that diverged at a rung epoch is diverged, although
        ASHA then cuts it too."""
        trial = self.trials[index]
        if index in self.ended_before or trial.stop is not None:
            return
        trial.stop = reason
        with self._recording():
            self.rows.stopped(index, reason)

    def trial_restarted(self, index: int) -> None:
        """Ray Train restarted the trial's workers from its last checkpoint: a retry."""
        if index in self.ended_before:
            return
        self.trials[index].retries += 1
        self.retries += 1
        self._redraw(False)

    def results_received(self) -> None:
        with self._recording():
            self.rows.flush()

    def trial_placed(self, index: int | None, node_id: str) -> None:
        if index is None or index in self.ended_before:
            return
        nodes = self.trials[index].nodes
        if not nodes or nodes[-1] != node_id:
            nodes.append(node_id)

    def _checkpoint_lost(self, index: int, error: str | None) -> bool:
        """A resumed trial whose checkpoint Tune's saved state names but storage no longer has
        (see ``tune_section.LOST_CHECKPOINT``) did not fail: the runner starts it again after Tune's
        run, from its newest checkpoint on disk."""
        from cluster.tune_section import LOST_CHECKPOINT

        if error is None or LOST_CHECKPOINT not in error:
            return False
        self.lost_checkpoints.add(index)
        return True

    def trial_retried(self, index: int, error: str) -> None:
        if index in self.ended_before or self._trial_storage_failed(error) or self._checkpoint_lost(index, error):
            return
        self.trials[index].retries += 1
        self.retries += 1
        self._redraw(False)

    def trial_finished(self, index: int, error: str | None, at: float | None = None) -> None:
        if index in self.ended_before or self._trial_storage_failed(error) or self._checkpoint_lost(index, error):
            return
        trial = self.trials[index]
        self._tally.remove(trial)
        trial.ended = at or time.time()
        trial.error = error
        trial.status = records.ending(trial.stop, error)
        self._tally.add(trial)
        self._offer(trial)
        with self._recording():
            records.append_trial(self.results, self.section.id, trial)
            self.log.trial_ended(trial)
        tags = {"expgrid.status": trial.status, "expgrid.retries": str(trial.retries),
                "expgrid.last_epoch": str(trial.last_epoch)}  # fmt: skip
        if error:
            tags["expgrid.error"] = error[:5000]
        self.tracker.end_trial(self.section.id, index, MLFLOW_STATUS[trial.status], tags, trial.ended)
        self._redraw(True)

    def _offer(self, trial: TrialRecord) -> None:
        """The best can only change when a trial ends (running trials do not compete)."""
        if self._best.offer(trial):
            self._best_text = "" if self._best.best is None else self.describe(self._best.best)

    def _redraw(self, trial_ended: bool) -> None:
        self.progress.update(
            done=self._tally.done,
            running=self._tally.running,
            failed=self._tally.failed,
            retries=self.retries,
            best=self._best_text,
            trial_ended=trial_ended,
        )


