"""What the trials and the cluster see of expgrid's Ray adapter, with its patches in effect (the
test session's driver applies them, as `expgrid run` does): trials get the variable Tune sets
for them and load nothing of the driver's side; a variable Tune passes on still reaches them;
a section's end gives every CPU back."""

from __future__ import annotations

import io
import time

from expgrid.runner import RunOptions, prepare, run_study

PROBE = """
import os
import sys

import expgrid

DRIVER_SIDE = ("cluster.tune_section", "cluster.connect", "cluster.patches", "cluster.gpu", "expgrid.runner")


def probe(config):
    loaded = [name for name in DRIVER_SIDE if name in sys.modules]
    for epoch in (1, 2):
        expgrid.report({"epoch": epoch, "score": float(os.environ.get("PL_DISABLE_FORK") == "1"),
                        "driver_side_loaded": float(len(loaded)), "trial_side_loaded": float("cluster.trial_side" in sys.modules),
                        "aws_key_seen": float(os.environ.get("AWS_ACCESS_KEY_ID") == "key-of-this-test")})
"""


def _run_probe(tmp_path, monkeypatch, name: str, xs: list[int]):
    (tmp_path / "env_probe.py").write_text(PROBE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / f"{name}.yaml").write_text(
        f"study: {name}\ntrainable: env_probe:probe\nmetric: score\nsections:\n  - {{id: a, grid: {{x: {xs}}}}}\n"
    )
    study, spec = prepare(tmp_path / f"{name}.yaml")
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / name, stream=io.StringIO()))
    return [t.history[-1] for t in outcome.sections[0].trials]


def test_trials_see_pl_disable_fork_load_only_the_trial_side_and_a_section_end_frees_every_cpu(
        ray_session, tmp_path, monkeypatch):  # fmt: skip
    # Six trials on 2 CPUs: reused actors, and actors Tune asked for still starting at the end.
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    rows = _run_probe(tmp_path, monkeypatch, "env", [1, 2, 3, 4, 5, 6])
    assert [r["score"] for r in rows] == [1.0] * 6  # PL_DISABLE_FORK=1, as Tune gives its actors
    assert [r["trial_side_loaded"] for r in rows] == [1.0] * 6
    assert [r["driver_side_loaded"] for r in rows] == [0.0] * 6  # no Tune section, patches, runner
    total = ray_session.cluster_resources()["CPU"]
    deadline = time.monotonic() + 10
    while ray_session.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_session.available_resources().get("CPU", 0.0) == total


def test_a_variable_tune_passes_on_to_trials_still_reaches_them(ray_session, tmp_path, monkeypatch):
    # Set after the test session's Ray started, so its workers do not have it: only Tune's
    # runtime env for the trial actors brings it (e.g. credentials for s3:// checkpoint storage).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-of-this-test")
    rows = _run_probe(tmp_path, monkeypatch, "aws", [1, 2])
    assert [(r["aws_key_seen"], r["score"]) for r in rows] == [(1.0, 1.0)] * 2
