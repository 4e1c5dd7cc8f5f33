"""Checks shared by the MLflow reliability tests: a store compared with a results directory,
point by point, read straight from the record files (not through expgrid's sync code), and a
snapshot of everything a store returns for a study's runs."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "asha_stopped": "KILLED", "diverged": "FAILED",
          "failed": "FAILED"}  # fmt: skip


def _flat(config: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _value(v: float) -> Any:
    """As MLflow returns a metric value: ±inf stored as ±the largest float, NaN equal to NaN."""
    v = float(v)
    if math.isinf(v):
        v = math.copysign(sys.float_info.max, v)
    return "nan" if math.isnan(v) else v


def _artifacts(client: Any, run_id: str, folder: str | None = None) -> dict[str, int]:
    out = {}
    for info in client.list_artifacts(run_id, folder):
        if info.is_dir:
            out.update(_artifacts(client, run_id, info.path))
        else:
            out[info.path] = info.file_size
    return out


def ledger_of(results: Path, uri: str) -> dict[str, Any]:
    return json.loads((results / "mlflow.json").read_text())["stores"][uri.rstrip("/") if uri.startswith("http") else uri]


def assert_store_matches(client: Any, results: Path, uri: str) -> None:
    """Every finished section and trial of ``results`` has its run in the store, as recorded."""
    study = json.loads((results / "study.json").read_text())
    ledger = ledger_of(results, uri)
    study_run = client.get_run(ledger["study"])
    if study.get("tracking_uri") == uri:
        assert study["mlflow_run_id"] == ledger["study"]
    assert study_run.data.tags["expgrid.kind"] == "study"
    assert study_run.info.status == study.get("status", "FINISHED")
    assert {f"report/{p.name}" for p in (results / "report").iterdir()} | {"summary.json"} <= set(_artifacts(client, ledger["study"]))
    sections = sorted(p.parent for p in (results / "sections").glob("*/section.json"))
    assert sections, "no finished section to compare"
    for folder in sections:
        saved = json.loads((folder / "section.json").read_text())
        sid = saved["id"]
        section_run = client.get_run(ledger["sections"][sid])
        assert section_run.info.status == ("FINISHED" if saved["best"] else "FAILED")
        assert section_run.data.tags["mlflow.parentRunId"] == ledger["study"]
        assert section_run.data.tags["expgrid.section_id"] == sid
        stored = _artifacts(client, section_run.info.run_id)
        assert {"best_config.json", *(f"report/{p.name}" for p in (folder / "report").iterdir())} <= set(stored)
        assert any(name.startswith("logs/") for name in stored)
        trials = json.loads((folder / "trials.json").read_text())
        assert len(ledger["trials"][sid]) == len(trials)
        for trial in trials:
            run = client.get_run(ledger["trials"][sid][str(trial["index"])])
            where = f"section {sid} trial {trial['index']}"
            assert run.info.status == STATUS[trial["status"]], where
            tags = run.data.tags
            assert tags["mlflow.parentRunId"] == section_run.info.run_id, where
            assert (tags["expgrid.status"], tags["expgrid.retries"], tags["expgrid.trial_index"]) == (
                trial["status"], str(trial["retries"]), str(trial["index"])), where  # fmt: skip
            assert tags["expgrid.last_epoch"] == str(trial["history"][-1]["epoch"] if trial["history"] else 0), where
            flat = _flat(trial["config"])
            assert set(run.data.params) == set(flat), where
            for key, value in flat.items():
                if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                    assert run.data.params[key] == str(value), (where, key)
            names = {k for row in trial["history"] for k, v in row.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}  # fmt: skip
            assert set(run.data.metrics) == names, where
            for name in names:
                expected = sorted((row["epoch"], _value(row[name])) for row in trial["history"] if name in row)
                history = sorted((m.step, _value(m.value)) for m in client.get_metric_history(run.info.run_id, name))
                assert history == expected, (where, name)
            assert set(trial["artifacts"]) <= set(_artifacts(client, run.info.run_id)), where
    # Nothing under the study run is left RUNNING; what no record stands for is marked superseded.
    kept = {ledger["study"], *ledger["sections"].values(), *(i for t in ledger["trials"].values() for i in t.values())}
    for run in descendants(client, study_run.info.experiment_id, ledger["study"]):
        assert run.info.status != "RUNNING", run.info.run_name
        if run.info.run_id not in kept:
            assert run.data.tags.get("expgrid.superseded") == "true", run.info.run_name


def descendants(client: Any, experiment_id: str, run_id: str) -> list[Any]:
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=5000)
    return [r for child in runs for r in [child, *descendants(client, experiment_id, child.info.run_id)]]


def snapshot(client: Any, experiment_id: str) -> dict[str, Any]:
    """Everything the store returns for every run of an experiment."""
    out = {}
    for run in client.search_runs([experiment_id], max_results=5000):
        rid = run.info.run_id
        out[rid] = {
            "info": run.info.to_proto().SerializeToString(),
            "params": dict(run.data.params),
            "tags": dict(run.data.tags),
            "metrics": {k: sorted((m.step, m.timestamp, _value(m.value)) for m in client.get_metric_history(rid, k))
                        for k in run.data.metrics},  # fmt: skip
            "artifacts": _artifacts(client, rid),
        }
    return out
