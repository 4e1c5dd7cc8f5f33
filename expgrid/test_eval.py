"""Test-set evaluation (``test: best``): after a section, its best trial is evaluated once on the
test split, at the checkpoint of its selected epoch (``select: best_epoch``: the best epoch's,
else its last), by the trainable's ``evaluate`` hook (``expgrid.trainable_spec``) in one small
Ray task with the trial's resources (``cluster/test_eval.py``).

The validation metrics chose the trial; the test metrics (``test_loss``, ``test_accuracy``, …,
every name starting with ``test_``) only describe it. They are kept apart: in ``section.json``
under ``"test"``, and from there in the section table, the summary, the Parquet store and the
section's MLflow run (``expgrid.reports``, ``expgrid.tracking.record``)::

    "test": {"trial": 3, "epoch": 7, "metrics": {"test_accuracy": 0.93, ...}, "seconds": 1.2}

(``"error"`` instead of ``"metrics"`` when the evaluation could not run: the section stays
finished, the study goes on, and the next run of the study tries again.)

Which weights: a section with ``test:`` keeps the selected epoch's checkpoint — each trial also
checkpoints its last planned epoch, ASHA's rungs and the epoch early stopping ends it
(``TrialRules.keep_last_checkpoint``), a best-epoch section its best epochs as always — and is
never packed (a pack keeps only its current trial's checkpoint). The evaluation looks for the
trial's checkpoint of that epoch in Tune's storage and checks that it is this run's (the
checkpointed running best of the study metric equals the record's), so a stale checkpoint of an
earlier attempt is never tested.

``section.json`` is written before the evaluation: a run stopped during it leaves a finished
section whose test is pending, and the next run (with or without ``--resume``) runs just that.
Core module: no Ray / MLflow / torch at module level.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from expgrid import planning, records
from expgrid.errors import ConfigError, StudyFileError, Text
from expgrid.records import TrialRecord
from expgrid.study_types import Section, Study
from expgrid.trainable_spec import TrainableSpec, data_key_of

PREFIX = "test_"  # every test metric's name starts with it


def wanted(study: Study, section: Section) -> bool:
    return study.test_of(section) != "none"


def _field(study: Study, section: Section) -> str:
    """Where the study file asks for the section's test: its own ``test`` or the study's."""
    if section.test is None:
        return "test"
    return f"sections[{study.sections.index(section)}].test"


def check_study(study: Study, spec: TrainableSpec, check_data: bool = True) -> None:
    """One line (StudyFileError) for a section that asks for ``test:`` of a trainable without an
    ``evaluate`` hook, or (``check_data``) of data without a test split (the spec's
    ``test_split``, which needs no data loaded and no torch)."""
    for section in study.sections:
        if not wanted(study, section):
            continue
        field, value = _field(study, section), study.test_of(section)
        if spec.evaluate is None:
            raise StudyFileError(study.path, ConfigError(
                field, "none, or a trainable with an `evaluate` hook (TrainableSpec.evaluate)",
                Text(f"{value} (trainable {spec.name!r} has none)")))  # fmt: skip
        if not check_data or spec.test_split is None:
            continue
        seen: set[Any] = set()
        for plan in planning.plan_section(study, spec, section, {}):
            key = data_key_of(spec, plan.config) if spec.takes_data else None
            if key in seen:
                continue
            seen.add(key)
            lacking = spec.test_split(plan.config)  # type: ignore[operator]
            if lacking:
                raise StudyFileError(study.path, ConfigError(
                    field, "data with a test split (or test: none)", Text(f"{value} on {lacking}")))  # fmt: skip


def pending(study: Study, section: Section, saved: Mapping[str, Any] | None) -> bool:
    """Whether a finished section still owes its test evaluation (never run, or it failed)."""
    if not wanted(study, section) or not saved or saved.get("best") is None:
        return False
    test = saved.get("test")
    return not isinstance(test, Mapping) or "metrics" not in test


def mlflow_metrics(test: Mapping[str, Any] | None) -> dict[str, float]:
    """The section run's ``test_*`` metrics (none when there was no evaluation)."""
    return dict((test or {}).get("metrics") or {})


def checkpoint_folders(storage: str, section_id: str, index: int) -> list[str]:
    """Where a trial's checkpoints may be: its Tune trial folder (also in the experiment that
    recovers lost checkpoints after a resume) and its Ray Train run (data-parallel trials)."""
    base = Path(storage) / f"section-{section_id}"
    return [str(base / f"trial_{index:04d}"), str(Path(f"{base}-recovered") / f"trial_{index:04d}"),
            str(Path(f"{base}-trial_{index:04d}"))]  # fmt: skip


def running_best(trial: TrialRecord, metric: str, mode: str, epoch: Any) -> float | None:
    """The best value of ``metric`` up to ``epoch``: what the trial's checkpoint of that epoch
    holds as its watcher's best (how a checkpoint is recognised as this run's)."""
    values = [float(r[metric]) for r in trial.history
              if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]) and r.get("epoch", 0) <= epoch]  # fmt: skip
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def evaluate_best(
    study: Study,
    spec: TrainableSpec,
    section: Section,
    best: TrialRecord | None,
    results: Path,
    storage: str,
    data: Any,
    resources: Mapping[str, float],
    stop_requested: Callable[[], bool],
    out: TextIO | None = None,
) -> dict[str, Any] | None:
    """Evaluate ``best`` (``data``: the object reference of its data, or None) and store the
    result in the section's ``section.json``; returns it (None when the section asks for none).
    Raises :class:`expgrid.interrupts.Interrupted` when a stop was asked for meanwhile."""
    if not wanted(study, section) or best is None:
        return None
    from cluster import test_eval as task  # imported here: the core never loads Ray at import

    selected = best.selected(study.metric, study.mode, section.select) or {}
    epoch = selected.get("epoch")
    record: dict[str, Any] = {"trial": best.index, "epoch": epoch, "select": section.select.to_json()}
    started = time.perf_counter()
    try:
        if "://" in storage:
            raise task.TestEvalError(f"--storage {storage}: test evaluation reads checkpoints from a directory")
        record["metrics"] = task.run(
            spec.evaluate,
            best.config, checkpoint_folders(storage, section.id, best.index), epoch,
            running_best(best, study.metric, study.mode, epoch), data, resources, os.getcwd(), stop_requested,
        )  # fmt: skip
    except task.TestEvalError as e:
        record["error"] = str(e)
        print(f"warning: section {section.id}: test evaluation of trial {best.index}: {e}", file=out or sys.stdout)
    record["seconds"] = time.perf_counter() - started
    records.write_section_test(results, section.id, record)
    if "metrics" in record:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())
        print(f"  {section.id} {section.name}: test (trial {best.index}, epoch {epoch}): {shown}", file=out or sys.stdout)
    return record


def evaluate_read_back(
    study: Study,
    spec: TrainableSpec,
    section: Section,
    best: TrialRecord,
    results: Path,
    options: Any,
    data_cache: dict[Any, Any],
    tracker: Any,
    stop_requested: Callable[[], bool],
    out: TextIO | None = None,
) -> dict[str, Any] | None:
    """A finished section read back whose test evaluation is pending (the run stopped during
    it, or it failed): run it now, then its report and the end of its MLflow run, as at the
    section's end."""
    from cluster import connect, trial_side
    from expgrid import reports
    from expgrid.config import flatten
    from expgrid.logfiles import log_path
    from expgrid.stopping import section_mlflow_status

    connect.connect(options.address, options.num_cpus, options.num_gpus, options.connect_timeout)
    saved = records.read_section(results, section.id) or {}
    data = None
    if spec.takes_data:
        key = data_key_of(spec, best.config)
        if key not in data_cache:
            data_cache[key] = trial_side.share(spec.load_data(best.config))
        data = data_cache[key]
    resources = saved.get("resources") or study.resources_of(section).as_ray()
    storage = options.storage or str(results / "tune")
    test = evaluate_best(study, spec, section, best, results, storage, data, resources, stop_requested, out)
    facts = reports.StudyFacts.from_study(study, spec)
    files = reports.write_section_report(facts, reports.load_section(results, section.id), results)
    trials = records.read_trials(results, section.id)
    first = min(trials, key=lambda t: t.index)
    tracker.start_section(section.id, section.name, {k: v for k, v in flatten(first.config).items() if k not in section.swept})
    best_row = (saved.get("best") or {}).get("metrics") or {}
    log = log_path(results, section.id)
    tracker.end_section(
        section.id, section_mlflow_status(True),
        {f"best_{study.metric}": best_row.get(study.metric, math.nan), "seconds": saved.get("seconds", 0.0),
         **mlflow_metrics(test)},
        {"best_config.json": saved.get("best") or {}, **({f"logs/{log.name}": log} if log.is_file() else {}),
         **{f"report/{p.name}": p for p in files}},
        {"expgrid.best_trial": str(best.index)},
    )  # fmt: skip
    return test
