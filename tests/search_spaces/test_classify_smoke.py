"""The classification coursework studies in smoke mode: every section of cifar10.yaml,
iml_project4.yaml and dl_tasks.yaml runs its first two trials for one epoch on tiny generated
data in the real layouts (CIFAR-10 pickles, Fashion-MNIST IDX files, an image folder), through
the CLI attached to the test session's Ray (`--address`). Pretrained weights cannot be here:
smoke runs stand in random ones (`model.weights: random`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.classification.synthetic import write_fake_cifar10, write_fake_fashion_mnist, write_fake_image_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_train=200, n_test=50)
    write_fake_fashion_mnist(root, n_train=200, n_test=50)
    write_fake_image_folder(root, classes=4, per_class=20, size=24)
    return root


def _smoke(study: str, data_root: Path, results: Path, address: str) -> dict[str, list[dict]]:
    proc = subprocess.run(
        [sys.executable, "-m", "expgrid", "run", study, "--smoke", "--data-root", str(data_root),
         "--results", str(results), "--address", address],
        capture_output=True, text=True, timeout=1200, cwd=REPO, env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sections = {}
    for folder in sorted((results / "sections").iterdir()):
        trials = json.loads((folder / "trials.json").read_text())
        assert all(t["status"] == "completed" for t in trials), (folder.name, trials)
        sections[folder.name] = trials
    return sections


def _tested(results: Path) -> dict[str, dict | None]:
    """Each section's test evaluation (``test: best``) from its section.json, checked for sense."""
    tests = {}
    for folder in sorted((results / "sections").iterdir()):
        saved = json.loads((folder / "section.json").read_text())
        test = tests[folder.name] = saved.get("test")
        if test is None:
            continue
        assert test["trial"] == saved["best"]["index"] and "error" not in test, (folder.name, test)
        m = test["metrics"]
        assert 0 <= m["test_accuracy"] <= 1 and m["test_error"] == pytest.approx(1 - m["test_accuracy"])
        assert m["test_loss"] > 0 and m["test_samples"] > 0
        two_classes = saved["best"]["config"]["dataset"]["name"] in ("moons", "circles", "spirals")
        if two_classes:  # top-5 only with 5 or more classes
            assert "test_top5_accuracy" not in m
        else:
            assert m["test_top5_accuracy"] >= m["test_accuracy"]  # 10 classes: top-5 reported
        summary = (results / "report" / "summary.csv").read_text()
        assert "test_accuracy" in summary.splitlines()[0]
    return tests


def _swept(trials: list[dict]) -> list[dict]:
    return [t["swept"] for t in trials]


def test_cifar10_study_smoke(ray_session, data_root, tmp_path):
    sections = _smoke("cifar10", data_root, tmp_path / "r", ray_session.get_runtime_context().gcs_address)
    assert sorted(sections) == ["1", "2", "3"]
    assert all(t is not None for t in _tested(tmp_path / "r").values())  # test: best, every section
    assert sorted(p.name for p in (tmp_path / "r" / "logs").iterdir()) == ["log_sec1.txt", "log_sec2.txt", "log_sec3.txt"]
    assert all(len(t) == 2 and all(x["history"][-1]["epoch"] == 1 for x in t) for t in sections.values())
    # Zipped optimiser settings vary together, crossed with the dropout grid.
    assert _swept(sections["1"]) == [
        {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.lr": 0.01, "model.dropout": 0.0},
        {"optimizer.name": "sgd", "optimizer.momentum": 0.9, "optimizer.lr": 0.01, "model.dropout": 0.0},
    ]
    # Section 2 crosses its dropout rates with the two best optimiser settings of section 1 (of
    # the two that ran: both carried), one smoke trial each.
    best_two = sorted(sections["1"], key=lambda t: (-t["history"][-1]["val_accuracy"], t["index"]))
    dropout = sections["2"]
    assert [t["parent"]["trial"] for t in dropout] == [t["index"] for t in best_two]
    assert [t["swept"] for t in dropout] == [{**{k: v for k, v in t["swept"].items() if k != "model.dropout"},
                                              "model.dropout": 0.1} for t in best_two]  # fmt: skip
    assert all(t["config"]["optimizer"]["momentum"] == t["swept"]["optimizer.momentum"] for t in dropout)
    models = sections["3"]
    assert [t["config"]["model"]["name"] for t in models] == ["simple_cnn", "resnet9"]
    assert models[1]["config"]["grad_clip"] == 0.1 and models[1]["config"]["batch_size"] == 400
    for trial in models:
        row = trial["history"][-1]
        assert 0 <= row["val_error"] <= 1 and row["val_top5_accuracy"] >= row["val_accuracy"]
        assert row["parameters"] > 0 and row["iterations"] >= 1 and row["ms_per_image"] > 0
        assert "confusion_matrix.csv" in trial["artifacts"]


def test_iml_project4_study_smoke(ray_session, data_root, tmp_path):
    results = tmp_path / "r"
    sections = _smoke("iml_project4", data_root, results, ray_session.get_runtime_context().gcs_address)
    assert sorted(sections) == ["1", "2", "3", "4", "5"]
    tested = _tested(results)
    assert all(t is not None for t in tested.values())
    assert tested["1"]["metrics"]["test_samples"] == 50  # the fake Fashion-MNIST's test images
    # Zipped, not crossed: the first two listed pairs, each with its own epoch count.
    assert _swept(sections["3"]) == [{"batch_size": 1, "epochs": 1}, {"batch_size": 16, "epochs": 10}]
    assert [t["history"][-1]["epoch"] for t in sections["3"]] == [1, 10]
    assert [t["history"][-1]["iterations"] for t in sections["3"]] == [64, 4]  # 64 smoke images
    assert _swept(sections["4"]) == [{"model.depth": 1, "model.width": 16}, {"model.depth": 2, "model.width": 16}]
    for trial in sections["4"]:
        norms = json.loads((results / "sections" / "4" / "trials" / str(trial["index"]) / "grad_norms.json").read_text())
        assert len(norms["layers"]) == trial["swept"]["model.depth"] + 1  # hidden layers and the head
        assert trial["config"]["dataset"]["name"] == "spirals" and "decision_boundary.png" in trial["artifacts"]
        assert (trial["config"]["optimizer"]["name"], trial["config"]["batch_size"]) == ("adam", 128)  # not inherited
    report = results / "sections" / "4" / "report"
    assert (report / "decision_boundary_best.png").is_file() and (report / "decision_boundary_worst.png").is_file()
    transfer = sections["5"]
    assert [t["config"]["mode"] for t in transfer] == ["scratch", "scratch"]  # the grid's first two points
    assert transfer[0]["config"]["model"]["name"] == "resnet18"


def test_dl_tasks_study_smoke(ray_session, data_root, tmp_path):
    sections = _smoke("dl_tasks", data_root, tmp_path / "r", ray_session.get_runtime_context().gcs_address)
    assert sorted(sections) == ["1", "2", "3", "4", "5", "6"]
    tested = _tested(tmp_path / "r")
    assert [sid for sid, t in tested.items() if t is not None] == ["1", "2", "3", "4"]  # not the image folder's
    assert _swept(sections["2"]) == [{"model.dropout": 0.0, "model.batchnorm": False},
                                     {"model.dropout": 0.3, "model.batchnorm": False}]  # fmt: skip
    vgg = sections["5"]
    assert [t["config"]["mode"] for t in vgg] == ["scratch", "linear_probe"]
    assert all(t["config"]["dataset"]["name"] == "image_folder" for t in vgg)
    probe = vgg[1]["history"][-1]
    assert probe["trainable_parameters"] < probe["parameters"]  # the frozen backbone is not trained
    assert all(t["history"][-1]["seconds"] > 0 for t in sections["6"])
