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


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_file_is_valid(path, fake_npz):
    text = path.read_text()
    overrides = {"dataset.path": str(fake_npz)} if "fashion_mnist" in text else {}
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
