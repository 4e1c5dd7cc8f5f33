"""Every shipped study file validates against its trainable (data paths pointed at test data)."""

from pathlib import Path

import numpy as np
import pytest

from expgrid.runner import prepare
from expgrid.study import EarlyStopping, Selection

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


@pytest.fixture(scope="module")
def fake_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 255, (1600, 28, 28), dtype=np.uint8), labels=rng.integers(0, 10, 1600))
    return path


@pytest.fixture(scope="module")
def fake_veri(tmp_path_factory):
    from trainables.reid.synthetic import write_fake_veri

    return write_fake_veri(tmp_path_factory.mktemp("veri"), size=(16, 16))


@pytest.fixture(scope="module")
def fake_image_root(tmp_path_factory):
    """CIFAR-10 pickles, Fashion-MNIST IDX files and an image folder under one root."""
    from trainables.classification.synthetic import (
        write_fake_cifar10,
        write_fake_fashion_mnist,
        write_fake_image_folder,
    )

    root = tmp_path_factory.mktemp("images")
    write_fake_cifar10(root, 20, 10)
    write_fake_fashion_mnist(root, 20, 10)
    return write_fake_image_folder(root, classes=3, per_class=2, size=8)


CLASSIFY_ROOTED = ("cifar10", "iml_project4", "dl_tasks")  # studies whose data all lie under dataset.root


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_file_is_valid(path, fake_npz, fake_veri, fake_image_root):
    text = path.read_text()
    overrides = {"dataset.path": str(fake_npz)} if "fashion_mnist" in text else {}
    if "trainable: reid" in text:  # no ImageNet weights can be here: validated untrained
        overrides = {"dataset.root": str(fake_veri), "model.pretrained": False}
    if path.stem in CLASSIFY_ROOTED:  # sizes are checked against the real datasets' when loaded
        overrides = {"dataset.root": str(fake_image_root), "model.weights": "random"}
    study, spec = prepare(path, overrides)
    assert study.sections and all(s.num_trials >= 1 for s in study.sections)


def test_fashion_mnist_study_matches_the_assignment(fake_npz):
    study, _ = prepare(SPACES / "fashion_mnist.yaml", {"dataset.path": str(fake_npz)})
    assert [s.id for s in study.sections] == ["3.2", "3.3", "3.4", "3.4e", "3.5"]
    assert study.section("3.5").num_trials == 120
    # 3.4a: per lr the epoch of lowest validation loss; 3.4e: patience 5 on it, at lr 0.001.
    by_val_loss = Selection(epoch="best_epoch", monitor="val_loss", mode="min")
    assert study.section("3.4").select == study.section("3.4e").select == by_val_loss
    assert dict(study.section("3.4e").grid) == {"optimizer.lr": (0.001,)}
    assert study.early_stopping_of(study.section("3.4e")) == EarlyStopping(monitor="val_loss", mode="min", patience=5)
    assert study.early_stopping_of(study.section("3.4")) is None
    assert study.section("3.2").inherit == study.section("3.3").inherit == "none"
    assert dict(study.section("3.2").grid)["optimizer.weight_decay"] == (0, 1e-4, 1e-3, 1e-2, 0.1)
    assert dict(study.section("3.3").grid)["model.dropout"] == (0, 0.1, 0.3, 0.5, 0.7, 0.9)
    assert study.defaults["model"]["hidden"] == [128, 64] and study.defaults["epochs"] == 150


def test_reid_study_matches_the_coursework(fake_veri):
    study, _ = prepare(SPACES / "reid_veri776.yaml", {"dataset.root": str(fake_veri), "model.pretrained": False})
    assert [s.id for s in study.sections] == ["0", "1", "2", "3.1", "3.2", "3.3"]
    default_run = study.section("0")  # the coursework's first question: the default settings, once
    assert default_run.swept == () and default_run.num_trials == 1
    assert (study.metric, study.mode, study.report[0]) == ("mAP", "max", "rank1")
    models = dict(study.section("1").zip)
    workers = dict(zip(models["model.name"], models["workers"]))
    assert len(workers) == 9 and {m for m, w in workers.items() if w == 2} == {"resnet50", "resnet50_fc512", "vgg16", "vit_b_16"}
    augmentations = dict(study.section("2").grid)["augmentations"]
    additions = {frozenset(a) - {"random2dtranslation", "hflip"} for a in augmentations}
    assert len(augmentations) == 16 == len(additions)  # the default, each addition, every combination
    assert all({"random2dtranslation", "hflip"} <= set(a) for a in augmentations)
    assert dict(study.section("3.1").grid)["optimizer.lr"] == (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    assert dict(study.section("3.2").grid)["train_batch"] == (8, 16, 32, 64, 96, 128)
    assert dict(study.section("3.3").grid)["optimizer.name"] == ("sgd", "rmsprop", "adam", "amsgrad")
    assert study.defaults["optimizer"] == {"name": "amsgrad", "lr": 3e-4, "weight_decay": 5e-4}


def test_zipped_sweeps_of_the_coursework_studies_are_the_listed_pairs(fake_image_root):
    from expgrid.planning import sweep_points

    study, _ = prepare(SPACES / "iml_project4.yaml", {"dataset.root": str(fake_image_root), "model.weights": "random"})
    pairs = [(p["batch_size"], p["epochs"]) for p in sweep_points(study, study.section("3"))]
    assert pairs == [(1, 1), (16, 10), (128, 50), (1024, 50)]
    shapes = [(p["model.depth"], p["model.width"]) for p in sweep_points(study, study.section("4"))]
    assert shapes == [(1, 16), (2, 16), (6, 16), (10, 16), (6, 8), (6, 32), (6, 64)]
    transfer = sweep_points(study, study.section("5"))
    assert len(transfer) == 15 and {p["mode"] for p in transfer} == {"scratch", "linear_probe", "fine_tune"}

    study, _ = prepare(SPACES / "cifar10.yaml", {"dataset.root": str(fake_image_root)})
    optimisers = sweep_points(study, study.section("1"))
    assert len(optimisers) == 10  # 5 zipped optimiser settings × dropout 0 / 0.25
    assert {(p["optimizer.name"], p["optimizer.momentum"]) for p in optimisers} == {
        ("sgd", 0.0), ("sgd", 0.9), ("adam", 0.9), ("rmsprop", 0.9), ("adamw", 0.9)}  # fmt: skip
    dropout = study.section("2")  # dropout rates for the two best optimisers of section 1
    assert (dropout.inherit, dropout.top, dropout.swept, dropout.num_trials) == (("1",), 2, ("model.dropout",), 8)
    models = sweep_points(study, study.section("3"))
    assert [(p["model.name"], p["batch_size"]) for p in models] == [("simple_cnn", 32), ("resnet9", 400), ("resnet20", 128)]
