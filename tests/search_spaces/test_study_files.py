"""Every shipped study file validates against its trainable (data paths pointed at test data)."""

from pathlib import Path

import numpy as np
import pytest

from expgrid.runner import prepare

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


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_file_is_valid(path, fake_npz, fake_veri):
    text = path.read_text()
    overrides = {"dataset.path": str(fake_npz)} if "fashion_mnist" in text else {}
    if "trainable: reid" in text:  # no ImageNet weights can be here: validated untrained
        overrides = {"dataset.root": str(fake_veri), "model.pretrained": False}
    study, spec = prepare(path, overrides)
    assert study.sections and all(s.num_trials >= 1 for s in study.sections)


def test_fashion_mnist_study_matches_the_assignment(fake_npz):
    study, _ = prepare(SPACES / "fashion_mnist.yaml", {"dataset.path": str(fake_npz)})
    assert [s.id for s in study.sections] == ["3.2", "3.3", "3.4", "3.5"]
    assert study.section("3.5").num_trials == 120
    assert study.section("3.4").select == "best_epoch"
    assert study.section("3.2").inherit == study.section("3.3").inherit == "none"
    assert dict(study.section("3.2").grid)["optimizer.weight_decay"] == (0, 1e-4, 1e-3, 1e-2, 0.1)
    assert dict(study.section("3.3").grid)["model.dropout"] == (0, 0.1, 0.3, 0.5, 0.7, 0.9)
    assert study.defaults["model"]["hidden"] == [128, 64] and study.defaults["epochs"] == 150


def test_reid_study_matches_the_coursework(fake_veri):
    study, _ = prepare(SPACES / "reid_veri776.yaml", {"dataset.root": str(fake_veri), "model.pretrained": False})
    assert [s.id for s in study.sections] == ["1", "2", "3.1", "3.2", "3.3"]
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
