"""A run's data goes to MLflow in batches within its limits (a real SQLite store refuses bigger ones)."""

from __future__ import annotations

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from expgrid.tracking.batches import log_file, log_run_data, param_entities


def test_run_data_goes_in_batches_within_mlflows_limits(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("x", (tmp_path / "art").as_uri())).info.run_id
    params = [Param(f"p{i}", str(i)) for i in range(250)]
    tags = [RunTag(f"t{i}", str(i)) for i in range(150)]
    metrics = [Metric("m", float(i), 0, i) for i in range(2500)]
    log_run_data(client, run_id, params=params, metrics=metrics, tags=tags)
    run = client.get_run(run_id)
    assert len(run.data.params) == 250
    assert sum(k.startswith("t") for k in run.data.tags) == 150
    assert len(client.get_metric_history(run_id, "m")) == 2500

    assert {(p.key, p.value) for p in param_entities({"optimizer": {"lr": 0.1}, "flags": [1, 2]})} == {
        ("optimizer.lr", "0.1"), ("flags", "[1, 2]")}  # fmt: skip
    (tmp_path / "local name.txt").write_text("content")
    log_file(client, run_id, "logs/section.log", tmp_path / "local name.txt")  # renamed on the way
    assert [a.path for a in client.list_artifacts(run_id, "logs")] == ["logs/section.log"]
