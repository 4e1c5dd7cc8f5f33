"""``expgrid sync RESULTS_DIR``: upload to MLflow what a run's results hold and MLflow lacks.

The results directory is the record of a run; MLflow is its mirror. When the tracking server
was unreachable for part of a run (trials went on, the writes failed), or the results are to be
seen in another store, this writes the study → section → trial runs that the store does not
have yet: params, per-epoch metrics, tags, status and the section's files (report, log). Runs
already there are left alone, so a sync can be repeated. Runs are matched by their expgrid tags
(section id, trial index) under the study run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from expgrid import records
from expgrid.errors import ResultsError
from expgrid.logfiles import log_path
from expgrid.records import TrialRecord
from expgrid.study import is_number
from expgrid.tracking import PARENT_TAG, _params, log_run_data, seed_sqlite_store

_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "asha_stopped": "KILLED",
           "diverged": "FAILED", "failed": "FAILED"}  # fmt: skip


def sync(results: Path, tracking_uri: str | None = None) -> dict[str, int]:
    """Create the missing runs; returns how many runs of each kind were created."""
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    state = records.read_json(results / "study.json")
    if not state or "study" not in state:
        raise ResultsError(f"{results}: not an expgrid results directory (no study.json with a study name)")
    uri = tracking_uri or state.get("tracking_uri")
    seed_sqlite_store(uri, results / "mlartifacts")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(state["study"])
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(state["study"])
    created = {"study": 0, "section": 0, "trial": 0}

    def find(filter_string: str) -> list[Any]:
        return client.search_runs([experiment_id], filter_string, max_results=10_000)

    studies = find("tags.`expgrid.kind` = 'study'")
    known = [r for r in studies if r.info.run_id == state.get("mlflow_run_id")]
    if known or studies:
        study_run = (known or studies)[0].info.run_id
    else:
        study_run = client.create_run(experiment_id, run_name=state["study"], tags={"expgrid.kind": "study"}).info.run_id
        client.set_terminated(study_run, "FINISHED")
        created["study"] += 1

    for section_id in _section_ids(results, state):
        saved = records.read_section(results, section_id)
        if saved is None:
            continue
        runs = find(f"tags.`expgrid.kind` = 'section' and tags.`expgrid.section_id` = '{section_id}' "
                    f"and tags.`{PARENT_TAG}` = '{study_run}'")  # fmt: skip
        if runs:
            section_run = runs[0].info.run_id
        else:
            section_run = _section_run(client, experiment_id, study_run, results, saved)
            created["section"] += 1
        have = {r.data.tags.get("expgrid.trial_index") for r in find(f"tags.`{PARENT_TAG}` = '{section_run}'")}
        for trial in records.read_trials(results, section_id):
            if str(trial.index) not in have:
                _trial_run(client, experiment_id, section_run, section_id, trial, results)
                created["trial"] += 1
    return created


def _section_ids(results: Path, state: dict[str, Any]) -> Iterable[str]:
    listed = state.get("sections") or []
    on_disk = sorted(p.name for p in (results / "sections").glob("*") if (p / "section.json").exists())
    return list(dict.fromkeys([*listed, *on_disk]))


def _section_run(client: Any, experiment_id: str, study_run: str, results: Path, saved: dict[str, Any]) -> str:
    sid = saved["id"]
    run = client.create_run(experiment_id, run_name=f"{sid} {saved.get('name', '')}".strip(), tags={
        PARENT_TAG: study_run, "expgrid.kind": "section", "expgrid.section_id": sid,
        "expgrid.section_name": saved.get("name", ""), "expgrid.synced": "true",
    }).info.run_id  # fmt: skip
    best = saved.get("best") or {}
    metric = saved.get("metric")
    value = (best.get("metrics") or {}).get(metric)
    if metric and is_number(value):
        client.log_metric(run, f"best_{metric}", float(value))
    client.log_dict(run, best, "best_config.json")
    for path in sorted((records.section_dir(results, sid) / "report").glob("*")):
        client.log_artifact(run, str(path), "report")
    if log_path(results, sid).exists():
        client.log_artifact(run, str(log_path(results, sid)), "logs")
    client.set_terminated(run, "FINISHED" if best else "FAILED")
    return run


def _trial_run(client: Any, experiment_id: str, section_run: str, section_id: str, trial: TrialRecord,
               results: Path) -> None:  # fmt: skip
    from mlflow.entities import Metric, RunTag

    swept = " ".join(f"{k}={v}" for k, v in trial.swept.items())
    run = client.create_run(experiment_id, run_name=f"{section_id}/{trial.index} {swept}"[:250], tags={
        PARENT_TAG: section_run, "expgrid.kind": "trial", "expgrid.section_id": section_id,
        "expgrid.trial_index": str(trial.index), "expgrid.synced": "true",
    }).info.run_id  # fmt: skip
    when = int((trial.ended or 0) * 1000)
    metrics = [Metric(k, float(v), when, int(row.get("epoch", 0))) for row in trial.history
               for k, v in row.items() if is_number(v) and k != "epoch"]  # fmt: skip
    tags = [RunTag("expgrid.status", trial.status), RunTag("expgrid.retries", str(trial.retries)),
            RunTag("expgrid.last_epoch", str(trial.last_epoch))]  # fmt: skip
    if trial.error:
        tags.append(RunTag("expgrid.error", trial.error[:5000]))
    log_run_data(client, run, params=_params(trial.config), metrics=metrics, tags=tags)
    folder = records.trial_dir(results, section_id, trial.index)
    for name in trial.artifacts:
        if (folder / name).is_file():
            client.log_artifact(run, str(folder / name), str(Path(name).parent) if "/" in name else None)
    client.set_terminated(run, _STATUS.get(trial.status, "FAILED"))
