"""Finding trainables: built-in ones and a third-party plugin through the entry points of
``expgrid.trainables``, resolved by name without importing the training code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from expgrid.errors import ConfigError, UnknownNameError
from expgrid.trainable_lookup import ENTRY_POINT_GROUP, list_trainables, register_trainable, resolve_trainable
from expgrid.trainable_spec import FunctionRef, TrainableSpec

REPO = Path(__file__).resolve().parents[2]

# A tiny plugin package, as a third party would ship it: a light spec module naming its trial
# function by reference, and the trial module, which leaves a mark when it is imported.
SPEC_MODULE = """
from expgrid.errors import ConfigError
from expgrid.trainable_spec import TrainableSpec

def check(config):
    if config["width"] < 1:
        raise ConfigError("width", "an integer >= 1", config["width"])

SPEC = TrainableSpec(
    name="ignored: the entry point's name counts",
    fn="{package}.train:train",
    defaults={{"width": 4, "epochs": 2}},
    metrics=("epoch", "acc"),
    check=check,
    catalogue=lambda: {{"widths": ["narrow", "wide"]}},
)
"""
TRAIN_MODULE = """
import os, pathlib
pathlib.Path(os.environ["PLUGIN_MARK"]).write_text("imported")

import expgrid

def train(config):
    for epoch in range(1, config["epochs"] + 1):
        expgrid.report({{"epoch": epoch, "acc": config["width"] / 10}})
"""


def write_plugin(root: Path, package: str, entry_points: dict[str, str], spec: str = SPEC_MODULE) -> Path:
    """A distribution on ``root`` (put it on sys.path): ``<package>/`` and its ``.dist-info``
    with ``entry_points.txt``, as pip would install it."""
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / "spec.py").write_text(spec.format(package=package))
    (root / package / "train.py").write_text(TRAIN_MODULE.format(package=package))
    info = root / f"{package}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return root


def expgrid_command(args: list[str], cwd: Path, plugins: Path, mark: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugins), str(REPO)]), "PLUGIN_MARK": str(mark)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "expgrid", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def study_file(folder: Path, trainable: str, width: int = 8) -> Path:
    path = folder / "study.yaml"
    path.write_text(textwrap.dedent(f"""\
        study: plugged
        trainable: {trainable}
        metric: acc
        defaults: {{width: {width}}}
        sections:
          - {{id: a, grid: {{epochs: [1, 2]}}}}
        """))
    return path


def test_builtin_trainables_are_installed_entry_points_and_resolve_by_name():
    assert {"classify", "reid", "toy"} <= set(list_trainables())
    spec = resolve_trainable("toy")
    assert spec.name == "toy" and spec.ref == "trainables.toy:toy" and "score" in spec.metrics
    assert resolve_trainable("toy") is spec  # loaded once per process
    with pytest.raises(UnknownNameError, match="did you mean classify"):
        resolve_trainable("clasify")


def test_resolving_and_checking_a_toy_study_imports_no_torch_ray_or_mlflow(tmp_path):
    study = study_file(tmp_path, "toy").read_text().replace("acc", "score").replace("width: 8", "x: 1")
    (tmp_path / "study.yaml").write_text(study)
    code = ("import sys; from expgrid.runner import prepare; prepare('study.yaml'); "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'trainables.classification') if m in sys.modules))")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_plugin_distribution_is_listed_and_validated_without_importing_its_training_code(tmp_path):
    plugins = write_plugin(tmp_path / "site", "expgrid_plugin_demo", {"demo": "expgrid_plugin_demo.spec:SPEC"})
    mark = tmp_path / "train-imported"
    work = tmp_path / "work"
    work.mkdir()

    listed = expgrid_command(["list"], work, plugins, mark)
    assert listed.returncode == 0, listed.stderr
    assert "demo         expgrid_plugin_demo.train:train  metrics: epoch, acc\n  widths:         narrow, wide\n" in listed.stdout
    assert "toy " in listed.stdout and "classify " in listed.stdout  # the built-ins beside it

    ok = expgrid_command(["validate", str(study_file(work, "demo"))], work, plugins, mark)
    assert ok.returncode == 0, ok.stderr
    assert "OK — study 'plugged', trainable demo, 1 sections, 2 trials" in ok.stdout
    bad = expgrid_command(["validate", str(study_file(work, "demo", width=0))], work, plugins, mark)
    assert bad.returncode == 2
    assert bad.stderr == f"error: {work / 'study.yaml'}: defaults.width: expected an integer >= 1, got 0\n"
    assert not mark.exists()  # neither list nor validate imported the trial function's module


def test_a_plugin_spec_names_its_function_which_loads_when_called(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path, "expgrid_plugin_inproc", {"inproc": "expgrid_plugin_inproc.spec:SPEC"})))
    monkeypatch.setenv("PLUGIN_MARK", str(tmp_path / "mark"))
    spec = resolve_trainable("inproc")
    assert spec.name == "inproc" and spec.ref == "expgrid_plugin_inproc.train:train"
    assert isinstance(spec.fn, FunctionRef) and not (tmp_path / "mark").exists()
    assert pickle.loads(pickle.dumps(spec.fn)) == spec.fn  # travels to Ray workers as its name
    assert spec.function().__module__ == "expgrid_plugin_inproc.train" and (tmp_path / "mark").exists()
    with pytest.raises(ConfigError, match="width: expected an integer >= 1, got 0"):
        spec.check({"width": 0, "epochs": 1})


def test_an_entry_point_may_name_a_plain_function(tmp_path, monkeypatch):
    root = write_plugin(tmp_path, "expgrid_plugin_fn", {"plainfn": "expgrid_plugin_fn.train:train"})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("PLUGIN_MARK", str(tmp_path / "mark"))
    spec = resolve_trainable("plainfn")
    assert spec.name == "plainfn" and spec.defaults is None and spec.ref == "expgrid_plugin_fn.train:train"


def test_a_broken_plugin_is_one_line_for_validate_and_list_goes_on(tmp_path):
    broken = SPEC_MODULE + "\nraise RuntimeError('half-installed')\n"
    plugins = write_plugin(tmp_path / "site", "expgrid_plugin_broken", {"broken": "expgrid_plugin_broken.spec:SPEC"},
                           spec=broken)  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    proc = expgrid_command(["validate", str(study_file(work, "broken"))], work, plugins, tmp_path / "mark")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {work / 'study.yaml'}: trainable: expected an installed trainable that loads")
    assert "broken = expgrid_plugin_broken.spec:SPEC (expgrid_plugin_broken 0.1): RuntimeError: half-installed" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr

    listed = expgrid_command(["list"], work, plugins, tmp_path / "mark")
    assert listed.returncode == 1
    assert "error: trainable broken: " in listed.stderr and "toy " in listed.stdout


def test_one_name_from_two_packages_is_refused(tmp_path, monkeypatch):
    for package in ("expgrid_plugin_one", "expgrid_plugin_two"):
        monkeypatch.syspath_prepend(str(write_plugin(tmp_path / package, package, {"twice": f"{package}.spec:SPEC"})))
    with pytest.raises(ConfigError, match="a trainable name one installed package defines"):
        resolve_trainable("twice")


def test_a_registered_trainable_comes_first_and_names_stay_unique():
    @register_trainable("lookup_test_local", defaults={"a": 1}, metrics=["m"])
    def local(config):
        pass

    spec = resolve_trainable("lookup_test_local")
    assert isinstance(spec, TrainableSpec) and spec.fn is local and spec.metrics == ("m",)
    assert "lookup_test_local" in list_trainables()
    with pytest.raises(ValueError, match="already registered"):
        register_trainable("lookup_test_local")(local)
