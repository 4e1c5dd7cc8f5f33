"""Decision boundaries of models of 2-D points (``boundary.py``): the grid the artifact holds is
the trained model's prediction there, the PNG shows it, and a section's report shows its best and
worst trials' pictures (``expgrid.reports.trial_images``), on a real local Ray."""

from __future__ import annotations

import io
import json
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from expgrid.config import merge
from expgrid.records import COMPLETED, DIVERGED, FAILED, TrialRecord
from expgrid.reporter import LocalSession, active
from expgrid.reports.results import SectionResults, StudyFacts
from expgrid.reports.trial_images import worst_trial
from expgrid.stopping import TrialRules
from trainables.classification.boundary import FIGURE_PIXELS, GRID_POINTS, MARGIN, boundary_title, grid_axes
from trainables.classification.models import create_model
from trainables.classification.train import CLASSIFY_DEFAULTS, classify, load_data

MOONS = {"dataset": {"name": "moons", "train_size": 200, "val_size": 100, "noise": 0.15},
         "model": {"name": "mlp", "depth": 2, "width": 16}, "optimizer": {"name": "adam", "lr": 0.02},
         "batch_size": 32, "epochs": 8}  # fmt: skip


def run(cfg: dict) -> LocalSession:
    """``classify`` in a LocalSession that knows the last epoch (so the artifacts come)."""
    session = LocalSession(TrialRules(metric="val_accuracy", mode="max", report_interval=0.0, last_epoch=cfg["epochs"]))
    with active(session):
        classify(cfg, load_data(cfg))
    session.flush()
    return session


def test_grid_spans_the_points_bounding_box_and_a_margin():
    points = np.array([[-1.0, 2.0], [3.0, 2.5], [0.0, 4.0]], dtype=np.float32)
    xs, ys = grid_axes(points)
    assert len(xs) == len(ys) == GRID_POINTS
    np.testing.assert_allclose([xs[0], xs[-1]], [-1 - MARGIN * 4, 3 + MARGIN * 4], rtol=1e-6)
    np.testing.assert_allclose([ys[0], ys[-1]], [2 - MARGIN * 2, 4 + MARGIN * 2], rtol=1e-6)
    assert np.all(np.diff(xs) > 0) and np.allclose(np.diff(xs), np.diff(xs)[0], rtol=1e-4)  # regular
    xs, ys = grid_axes(np.array([[1.0, 1.0], [1.0, 2.0]]))  # no extent along x: still a grid around it
    assert xs[0] < 1 < xs[-1]
    title = boundary_title({"name": "mlp", "depth": 2, "width": 16, "hidden": None}, 2, 50, 0.98712)
    assert title == "mlp 2-16-16-2, epoch 50: val_accuracy 0.987"


def test_the_artifact_holds_the_final_models_predictions_on_the_grid():
    session = run(MOONS)
    files = session.artifacts
    assert {"decision_boundary.png", "decision_boundary.npz"} <= set(files)
    with np.load(io.BytesIO(files["decision_boundary.npz"])) as npz:
        xs, ys, predicted = npz["x"], npz["y"], npz["predicted"]
    assert predicted.shape == (GRID_POINTS, GRID_POINTS) and predicted.dtype == np.int64
    data = load_data(MOONS)
    np.testing.assert_allclose([xs[0], ys[0]], data["x_train"].min(0) - MARGIN * np.ptp(data["x_train"], 0), rtol=1e-5)

    # the model saved at the last epoch, evaluated directly, one grid row at a time
    model = create_model(merge(CLASSIFY_DEFAULTS, MOONS)["model"], (2,), 2)
    model.load_state_dict(session.checkpoints[-1]["model"])
    model.eval()
    with torch.no_grad():
        direct = np.stack([model(torch.tensor([[x, y] for x in xs])).argmax(1).numpy() for y in ys])
    np.testing.assert_array_equal(predicted, direct)
    assert 0.1 < predicted.mean() < 0.9  # both classes hold a region: a boundary crosses the box
    assert session.history[-1]["val_accuracy"] > 0.8  # a trained model, not the initial one

    # the grid's class at each training point's nearest grid cell is the model's own prediction there
    x_train = data["x_train"]
    cols, rows = np.abs(x_train[:, :1] - xs).argmin(1), np.abs(x_train[:, 1:] - ys).argmin(1)
    with torch.no_grad():
        own = model(torch.from_numpy(x_train)).argmax(1).numpy()
    assert (predicted[rows, cols] == own).mean() > 0.95  # cells near the boundary may differ

    image = Image.open(io.BytesIO(files["decision_boundary.png"]))
    assert image.format == "PNG" and image.size == (FIGURE_PIXELS, FIGURE_PIXELS)
    # the two classes' regions: tab10 blue / orange at alpha 0.3 over white
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    for rgb in ((31, 119, 180), (255, 127, 14)):
        shade = 0.3 * np.array(rgb) + 0.7 * 255
        share = (np.abs(pixels - shade).max(-1) < 6).mean()
        assert share > 0.05, (rgb, share)


def test_a_sine_mlp_on_spirals_draws_its_boundary_too():
    spirals = merge(
        MOONS, {"dataset": {"name": "spirals", "noise": None}, "model": {"activation": "sine"}, "epochs": 2}
    )
    session = run(spirals)
    with np.load(io.BytesIO(session.artifacts["decision_boundary.npz"])) as npz:
        xs, ys = npz["x"], npz["y"]
    x_train = load_data(spirals)["x_train"]
    assert xs[0] < x_train[:, 0].min() < x_train[:, 0].max() < xs[-1] and ys[0] < x_train[:, 1].min()
    assert Image.open(io.BytesIO(session.artifacts["decision_boundary.png"])).size == (FIGURE_PIXELS, FIGURE_PIXELS)


def test_no_boundary_for_images_or_when_switched_off():
    images = {"dataset": {"name": "synthetic", "shape": [1, 6, 6], "num_classes": 3, "train_size": 48, "val_size": 24},
              "model": {"name": "mlp", "hidden": [8]}, "epochs": 1}  # fmt: skip
    assert "confusion_matrix.csv" in run(images).artifacts
    assert not {n for n in run(images).artifacts if n.startswith("decision_boundary")}
    off = run(merge(MOONS, {"epochs": 1, "diagnostics": {"decision_boundary": False}}))
    assert not {n for n in off.artifacts if n.startswith("decision_boundary")}


def _trial(index: int, accuracy: float | None, status: str = COMPLETED) -> TrialRecord:
    history = [] if accuracy is None else [{"epoch": 1, "val_accuracy": accuracy}]
    return TrialRecord(index=index, swept={"x": index}, config={}, status=status, history=history)


@pytest.mark.parametrize(("mode", "worst"), [("max", 2), ("min", 1)])
def test_the_worst_trial_is_the_lowest_score_among_scored_trials(mode, worst):
    trials = [_trial(0, 0.7), _trial(1, 0.9), _trial(2, 0.5), _trial(3, 0.5), _trial(4, 0.1, DIVERGED),
              _trial(5, None, FAILED)]  # fmt: skip
    section = SectionResults("1", "s", ("x",), "last_epoch", None, None, 0.0, None, trials)
    assert worst_trial(StudyFacts("t", "val_accuracy", mode), section).index == worst  # ties: the earlier
    alone = SectionResults("1", "s", ("x",), "last_epoch", None, None, 0.0, 0, [_trial(0, 0.7)])
    assert worst_trial(StudyFacts("t", "val_accuracy", "max"), alone) is None  # one trial: best only


def test_a_moons_section_on_ray_writes_each_trials_boundary_and_the_best_and_worst_in_its_report(
    ray_session, tmp_path, monkeypatch
):
    from expgrid import reports
    from expgrid.runner import RunOptions, prepare, run_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    study_file = tmp_path / "moons.yaml"
    study_file.write_text(
        textwrap.dedent("""
        study: moons-boundary
        trainable: classify
        metric: val_accuracy
        mode: max
        defaults:
          dataset: {name: moons, train_size: 200, val_size: 100, noise: 0.15}
          model: {name: mlp, depth: 2, width: 16}
          optimizer: {name: adam, lr: 0.02}
          batch_size: 32
          epochs: 6
        resources: {cpu: 1}
        sections:
          - id: "1"
            name: Width
            grid: {model.width: [1, 16, 64]}
    """)
    )
    study, spec = prepare(study_file)
    results = tmp_path / "results"
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=io.StringIO()))
    trials = outcome.sections[0].trials
    assert [t.status for t in trials] == [COMPLETED] * 3, [t.error for t in trials]

    section_dir = results / "sections" / "1"
    pictures = {}
    for trial in trials:
        folder = section_dir / "trials" / str(trial.index)
        assert {"decision_boundary.png", "decision_boundary.npz"} <= set(trial.artifacts)
        pictures[trial.index] = (folder / "decision_boundary.png").read_bytes()
        assert Image.open(folder / "decision_boundary.png").size == (FIGURE_PIXELS, FIGURE_PIXELS)
        with np.load(folder / "decision_boundary.npz") as npz:
            assert npz["predicted"].shape == (GRID_POINTS, GRID_POINTS)
    assert len(set(pictures.values())) == 3  # three models, three pictures

    # best and worst by the study metric, read back from the stored records
    stored = json.loads((section_dir / "trials.json").read_text())
    scores = {t["index"]: t["history"][-1]["val_accuracy"] for t in stored}
    best = max(scores, key=lambda i: (scores[i], -i))
    worst = min(scores, key=lambda i: (scores[i], i))
    assert best == json.loads((section_dir / "section.json").read_text())["best"]["index"]
    report = reports.section_report_dir(results, "1")
    assert (report / "decision_boundary_best.png").read_bytes() == pictures[best]
    assert best != worst  # a width-1 layer cannot bend around the moons (seeded: the same every run)
    assert (report / "decision_boundary_worst.png").read_bytes() == pictures[worst]
    markdown = (results / "report" / "report.md").read_text()
    assert "](../sections/1/report/decision_boundary_best.png)" in markdown
    print(
        f"\nmoons widths 1/16/64: val_accuracy {[round(scores[i], 3) for i in sorted(scores)]}, best {best}, worst {worst}"
    )

    # rebuilt from the results alone, the same copies
    (report / "decision_boundary_best.png").unlink()
    reports.rebuild(results)
    assert (report / "decision_boundary_best.png").read_bytes() == pictures[best]
