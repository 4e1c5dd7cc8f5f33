"""The two places where ``cluster.ray_api`` changes how Tune works (both for section start-up
and end costs, see bench/overhead.py): they are in effect with the installed Ray, and they
leave nothing behind. If a Ray upgrade moves the internals they rely on, the adapter falls
back to Tune's own code and these tests say so."""

from __future__ import annotations

import io
import textwrap
import time

from ray.tune.execution import class_cache
from ray.tune.execution.tune_controller import TuneController
from ray.tune.trainable.function_trainable import wrap_function

import cluster.ray_api  # noqa: F401 - its import changes Tune (what these tests check)
from expgrid.runner import RunOptions, prepare, run_study


def _noop(config):
    return None


def test_trial_actors_get_no_runtime_env_unless_something_must_be_passed_on(monkeypatch):
    for name in class_cache.ENV_VARS_TO_PROPAGATE:
        monkeypatch.delenv(name, raising=False)
    plain = class_cache._ActorClassCache().get(wrap_function(_noop))
    assert plain._default_options.get("runtime_env") is None  # so Ray's idle workers can take them

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")  # e.g. for s3:// checkpoint storage
    passed_on = class_cache._ActorClassCache().get(wrap_function(_noop))
    assert passed_on._default_options["runtime_env"]["env_vars"]["AWS_ACCESS_KEY_ID"] == "key"


ENV_PROBE = """
import os

import expgrid


def probe(config):
    expgrid.report({"epoch": 1, "score": float(os.environ.get("PL_DISABLE_FORK") == "1")})
"""


def test_trials_still_see_the_variable_tune_sets_for_them(ray_session, tmp_path, monkeypatch):
    (tmp_path / "env_probe.py").write_text(ENV_PROBE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "env.yaml").write_text(
        "study: env\ntrainable: env_probe:probe\nmetric: score\nsections:\n  - {id: a, grid: {x: [1, 2]}}\n"
    )
    study, spec = prepare(tmp_path / "env.yaml")
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    assert [t.history[-1]["score"] for t in outcome.sections[0].trials] == [1.0, 1.0]


def test_a_section_end_kills_every_trial_actor_and_frees_its_resources(ray_session, write_study, tmp_path):
    assert TuneController._cleanup_trials.__module__ == "cluster.ray_api"  # in effect with this Ray
    study, spec = prepare(write_study(textwrap.dedent("""
        study: cleanup
        trainable: toy
        metric: score
        defaults: {epochs: 2}
        sections:
          - {id: a, grid: {x: [1, 2, 3, 4, 5, 6]}}
    """)))
    run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    total = ray_session.cluster_resources()["CPU"]
    deadline = time.monotonic() + 10
    while ray_session.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_session.available_resources().get("CPU", 0.0) == total
