"""`expgrid sync`: the runs a results directory holds and a store lacks are uploaded, once (the exact
comparison of store and results, repairs and refusals: tests/reliability/test_mlflow_sync.py)."""

from __future__ import annotations

import io
import textwrap

from mlflow.tracking import MlflowClient

from expgrid.cli import main
from expgrid.runner import RunOptions, prepare, run_study


def test_sync_fills_an_empty_store_and_then_only_what_went_missing(ray_session, write_study, tmp_path, capsys):
    study, spec = prepare(write_study(textwrap.dedent("""
        study: sync
        trainable: toy
        metric: score
        defaults: {epochs: 3}
        sections:
          - {id: a, grid: {x: [0, 2]}}
          - {id: b, grid: {y: [-1, 1]}}
    """)))
    results = tmp_path / "r"
    run_study(study, spec, RunOptions(results_dir=results, stream=io.StringIO()))

    target = f"sqlite:///{tmp_path / 'other.db'}"  # a store that saw nothing of the run
    assert main(["sync", str(results), "--tracking-uri", target]) == 0
    assert "created 1 study, 2 section and 4 trial runs" in capsys.readouterr().out
    client = MlflowClient(target)
    experiment = client.get_experiment_by_name("sync").experiment_id
    trials = client.search_runs([experiment], "tags.`expgrid.kind` = 'trial'")
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    one = next(r for r in trials if r.data.tags["expgrid.section_id"] == "a" and r.data.tags["expgrid.trial_index"] == "1")
    assert [m.step for m in client.get_metric_history(one.info.run_id, "score")] == [1, 2, 3]
    assert one.data.params["x"] == "2" and one.data.tags["expgrid.status"] == "completed"
    sections = client.search_runs([experiment], "tags.`expgrid.kind` = 'section'")
    assert {a.path for a in client.list_artifacts(sections[0].info.run_id)} >= {"best_config.json", "logs", "report"}

    assert main(["sync", str(results), "--tracking-uri", target]) == 0  # again: nothing missing
    assert "nothing to do" in capsys.readouterr().out
    client.delete_run(one.info.run_id)  # a trial run lost (as when the server was down at its end)
    assert main(["sync", str(results), "--tracking-uri", target]) == 0
    assert "created 0 study, 0 section and 1 trial runs" in capsys.readouterr().out
