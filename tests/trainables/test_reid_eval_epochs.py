"""reid ranks the gallery only on epochs something reads: the last, ``eval_freq``'s, ASHA's rungs
(best-epoch selection and early stopping: every epoch). Rows of other epochs leave mAP / rank-k
out, and the driver — ASHA, records, the trials table — takes such rows as they are."""

from __future__ import annotations

import io
import textwrap

import pandas as pd
import pytest
import torch

from expgrid.config import merge
from expgrid.reporter import LocalSession, run_locally
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.stopping import SCORED, TrialRules
from trainables.reid.synthetic import write_fake_veri
from trainables.reid.train import REID_DEFAULTS, REID_SMOKE, load_data, reid

EVAL = {"mAP", "rank1", "rank5", "rank10", "rank20"}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return write_fake_veri(tmp_path_factory.mktemp("veri"), ids=8, cameras=2, images_per_camera=2, size=(16, 16))


def evaluated(rows) -> list[int]:
    """The epochs whose rows hold every ranking metric (asserting the others hold none)."""
    for row in rows:
        assert EVAL <= set(row) or not EVAL & set(row), row
    return [row["epoch"] for row in rows if EVAL <= set(row)]


@pytest.mark.parametrize(
    ("rules", "eval_freq", "expected"),
    [
        (None, 0, [3]),  # no rule reads it: the last epoch only, as the coursework's default
        (TrialRules("mAP", "max", flush_epochs=frozenset({2}), report_interval=0.0), 0, [2, 3]),  # ASHA rung 2
        (TrialRules("mAP", "max", report_interval=0.0), 2, [2, 3]),  # eval_freq 2
    ],
)
def test_the_trainer_evaluates_where_the_rules_need_it(tiny_root, rules, eval_freq, expected):
    cfg = merge(merge(REID_DEFAULTS, REID_SMOKE), {
        "dataset": {"root": str(tiny_root), "height": 16, "width": 16}, "model": {"name": "resnet18"},
        "epochs": 3, "train_batch": 8, "eval_freq": eval_freq, "threads": 1,
    })  # fmt: skip
    torch.set_num_threads(1)
    rows = run_locally(reid, cfg, load_data(cfg), session=LocalSession(rules)).history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert evaluated(rows) == expected
    assert all(r["loss_xent"] > 0 and "seconds" in r for r in rows)


def test_an_asha_section_scores_trials_that_evaluate_only_at_rungs(ray_session, write_study, tiny_root, tmp_path):
    """epochs 4, ASHA grace 1 × 3: rungs at epochs 1 and 3, so epoch 2 reports no mAP — neither
    Tune (its strict metric check), ASHA, the records nor the Parquet table take that as a failure."""
    study, spec = prepare(
        write_study(
            textwrap.dedent(f"""
        study: reid-rungs
        trainable: reid
        metric: mAP
        mode: max
        defaults:
          dataset: {{root: {tiny_root}, height: 16, width: 16}}
          model: {{name: resnet18, pretrained: false}}
          epochs: 4
          train_batch: 8
          test_batch: 32
          loader_workers: 0
          threads: 1
        resources: {{cpu: 1}}
        max_concurrent: 1
        scheduler: {{asha: {{grace_period: 1, reduction_factor: 3}}}}
        sections:
          - {{id: "1", name: Learning rate, grid: {{optimizer.lr: [1.0e-3, 1.0e-6]}}}}
    """)
        )
    )
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "r", stream=io.StringIO()))
    section = outcome.sections[0]
    for trial in section.trials:
        assert trial.status in SCORED, (trial.status, trial.error)
        epochs = [row["epoch"] for row in trial.history]
        assert epochs == list(range(1, trial.last_epoch + 1))
        assert evaluated(trial.history) == [e for e in (1, 3, 4) if e <= trial.last_epoch]
        assert trial.score("mAP", "max", "last_epoch") is not None
    assert section.best is not None
    frame = pd.read_parquet(tmp_path / "r" / "report" / "trials.parquet")
    second = frame[frame.epoch == 2]  # the first trial runs all 4 epochs (it sets the rungs' bars)
    assert len(second) >= 1 and second["mAP"].isna().all() and second["loss_xent"].notna().all()
    assert frame[frame.epoch == 1]["mAP"].notna().all()


def test_the_curves_draw_map_through_its_evaluation_epochs_only():
    from expgrid.records import TrialRecord
    from expgrid.reports import plots
    from expgrid.reports.results import SectionResults, StudyFacts

    history = [
        {"epoch": e, "loss_xent": 3.0 - 0.2 * e, **({"mAP": 0.1 * e} if e in (3, 5) else {})} for e in range(1, 6)
    ]
    record = TrialRecord(0, {"optimizer.lr": 1e-3}, {"epochs": 5}, "completed", history, started=0.0, ended=1.0)
    section = SectionResults(id="1", name="lr", swept=("optimizer.lr",), select="last_epoch", reference=None,
                             resources={"cpu": 1.0}, seconds=1.0, best_index=0, trials=[record])  # fmt: skip
    figure = plots.curves_figure(StudyFacts("reid", "mAP", "max", (), ("epoch", "loss_xent", "mAP")), section)
    lines = {line.get_label(): line for ax in figure.axes for line in ax.get_lines()}
    assert list(lines["optimizer.lr=0.001 · mAP"].get_xdata()) == [3, 5]
    assert list(lines["optimizer.lr=0.001 · mAP"].get_ydata()) == pytest.approx([0.3, 0.5])
    assert list(lines["optimizer.lr=0.001 · loss_xent"].get_xdata()) == [1, 2, 3, 4, 5]
