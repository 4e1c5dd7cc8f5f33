"""`expgrid validate` of a classify or reid study imports no torch, torchvision, Ray or MLflow.

The checks read the torch-free tables of ``options.py``; the torch modules register the builders.
The drift tests below import torch and assert each table equals what the torch code derives
(registry names, builder signatures), so a table cannot silently fall behind a builder.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "ray", "mlflow")
# Runs the real CLI in a fresh interpreter, then says which heavy libraries it had imported.
WRAPPER = f"""
import sys
from expgrid.cli import main
try:
    rc = main(sys.argv[1:])
finally:
    print("HEAVY=" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
sys.exit(rc)
"""


def validate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, "validate", *args], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=120,
    )  # fmt: skip


def heavy_of(proc: subprocess.CompletedProcess) -> list[str]:
    line = next(line for line in proc.stdout.splitlines() if line.startswith("HEAVY="))
    return [m for m in line.removeprefix("HEAVY=").split(",") if m]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A Fashion-MNIST-shaped .npz, a fake CIFAR-10 folder and a fake VeRi-776 folder."""
    from trainables.classification.synthetic import write_fake_cifar10
    from trainables.reid.synthetic import write_fake_veri

    root = tmp_path_factory.mktemp("light")
    npz = root / "fashion.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, images=rng.integers(0, 255, (1600, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 1600))
    return {
        "npz": npz,
        "cifar": write_fake_cifar10(root / "cifar", 20, 10),
        "veri": write_fake_veri(root / "veri", size=(16, 16)),
    }


CASES = {
    "digits_demo": lambda d: [],
    "fashion_mnist": lambda d: ["--set", f"dataset.path={d['npz']}"],
    "cifar10": lambda d: ["--data-root", str(d["cifar"])],
    # untrained here; pretrained (weights files looked up): test_reid_pretrained_weights_are_checked_without_torch
    "reid_veri776": lambda d: ["--data-root", str(d["veri"]), "--set", "model.pretrained=false"],
}


@pytest.mark.parametrize("study", sorted(CASES))
def test_validate_imports_no_heavy_library(study, data):
    proc = validate(study, *CASES[study](data))
    assert proc.returncode == 0, proc.stderr
    assert ": OK — study" in proc.stdout
    assert heavy_of(proc) == []


def test_a_bad_model_option_is_the_same_one_line_error_without_torch():
    proc = validate("digits_demo", "--set", "model.channels=[8]")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: --set: model.channels: expected an option of model 'mlp': "
        "one of hidden, depth, width, dropout, batchnorm, activation, residual, init, weights, got 'channels'"
    ]
    assert heavy_of(proc) == []


def test_a_pretrained_torchvision_model_still_checks_its_weights(tmp_path):
    """A pretrained mode's weights file is looked up (by torchvision's name for it, from the
    torch-free table), and a missing one is named, still without torch."""
    proc = validate("digits_demo", "--set", "mode=linear_probe", "--set", "model.name=resnet18",
                    "--set", "model.hidden=null", env={"TORCH_HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.splitlines()
    assert "model.weights: expected pretrained resnet18 weights" in line
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in line
    assert heavy_of(proc) == []


def test_reid_pretrained_weights_are_checked_without_torch(tmp_path, data):
    """reid's default ``model.pretrained: true``: each model's weights file must be in torch.hub's
    cache; validate says which one is missing, and passes once they are all there."""
    from trainables.pretrained_files import WEIGHTS_FILES

    args, env = ["--data-root", str(data["veri"])], {"TORCH_HOME": str(tmp_path)}
    missing = validate("reid_veri776", *args, env=env)
    assert missing.returncode == 2
    (line,) = missing.stderr.splitlines()
    assert "expected pretrained" in line and str(tmp_path / "hub" / "checkpoints") in line
    assert any(name in line for name in WEIGHTS_FILES.values())
    assert heavy_of(missing) == []

    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    for name in WEIGHTS_FILES.values():
        (cache / name).write_bytes(b"")  # validate checks that the file is there, not what it holds
    found = validate("reid_veri776", *args, env=env)
    assert found.returncode == 0, found.stderr
    assert ": OK — study" in found.stdout
    assert heavy_of(found) == []


def test_pretrained_file_names_equal_torchvisions():
    from trainables import backbones, pretrained_files

    assert pretrained_files.WEIGHTS_FILES == {
        name: backbones.ARCHITECTURES.get(name).weights_file_name() for name in backbones.ARCHITECTURES.names()
    }


@pytest.mark.parametrize(
    "env", [{}, {"TORCH_HOME": "/opt/th"}, {"TORCH_HOME": "~/th"}, {"XDG_CACHE_HOME": "/var/cache/x"},
            {"TORCH_HOME": "/opt/th", "XDG_CACHE_HOME": "/var/cache/x"}],
)  # fmt: skip
def test_hub_dir_equals_torch_hub(env, monkeypatch):
    import torch.hub

    from trainables import pretrained_files

    for name in ("TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert pretrained_files.hub_dir() == Path(torch.hub.get_dir())


# --- the tables equal what the torch code derives ----------------------------------------------


def test_classify_model_table_equals_the_builders_signatures():
    from trainables import backbones
    from trainables.classification import models, options

    assert sorted(options.MODEL_OPTIONS) == models.MODELS.names()
    for name in models.MODELS.names():
        params = inspect.signature(models.MODELS.get(name)).parameters
        assert options.MODEL_OPTIONS[name] == tuple(p for p in params if p not in options.BUILDER_ARGS), name
    pretrained = [
        n for n in models.MODELS.names() if "pretrained" in inspect.signature(models.MODELS.get(n)).parameters
    ]
    assert sorted(options.TORCHVISION_MODELS) == backbones.ARCHITECTURES.names() == pretrained
    assert sorted(options.ACTIVATIONS) == models.ACTIVATIONS.names()


def test_classify_name_tables_equal_the_registries():
    from trainables.classification import optim, options

    assert sorted(options.OPTIMIZERS) == optim.OPTIMIZERS.names()


def test_reid_name_tables_equal_the_registries():
    from trainables.reid import data, models, optim, options, samplers, transforms

    assert sorted(options.MODELS) == models.MODELS.names()
    assert sorted(options.OPTIMIZERS) == optim.OPTIMIZERS.names()
    assert sorted(options.SAMPLERS) == samplers.SAMPLERS.names()
    assert sorted(options.AUGMENTATIONS) == transforms.AUGMENTATIONS.names()
    assert sorted(options.DATASETS) == data.DATASETS.names()


def test_the_train_modules_hand_out_the_same_checks_and_tables():
    """One source: the names train.py has always exported are the torch-free modules' objects."""
    from trainables.classification import checks as classify_checks
    from trainables.classification import options as classify_options
    from trainables.classification import train as classify_train
    from trainables.reid import checks as reid_checks
    from trainables.reid import options as reid_options
    from trainables.reid import train as reid_train

    assert classify_train.check_config is classify_checks.check_config
    assert classify_train.CLASSIFY_DEFAULTS is classify_options.CLASSIFY_DEFAULTS
    assert reid_train.check_config is reid_checks.check_config
    assert reid_train.REID_DEFAULTS is reid_options.REID_DEFAULTS
