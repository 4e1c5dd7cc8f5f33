"""The coursework's section log files: names from section ids (the core's), what a trial's block holds (reid's hook)."""

from __future__ import annotations

from expgrid.logfiles import log_name, log_path
from expgrid.records import TrialRecord
from trainables.reid.section_log import SectionLog


def test_log_names_follow_section_and_question():
    assert log_name("3.1") == "log_sec3_q1.txt"
    assert log_name("1") == "log_sec1.txt"
    assert log_name("3.1.2") == "log_sec3_q1_2.txt"
    assert log_name("lr sweep") == "log_seclr_sweep.txt"


def test_a_trial_block_holds_config_epochs_and_test_results(tmp_path):
    log = SectionLog(log_path(tmp_path, "3.1"), "reid", "3.1", "Learning rate", "mAP", "max")
    trial = TrialRecord(
        index=2, swept={"optimizer.lr": 0.0001}, config={"epochs": 2, "optimizer": {"lr": 0.0001}},
        status="completed", started=100.0, ended=112.5,
        history=[
            {"epoch": 1, "loss_xent": 3.5, "train_accuracy": 0.25},
            {"epoch": 2, "loss_xent": 2.0, "train_accuracy": 0.5, "mAP": 0.5454, "rank1": 0.8701, "rank5": 0.93},
        ],
    )  # fmt: skip
    log.trial_ended(trial)
    log.section_ended(trial, "mAP")
    text = (tmp_path / "logs" / "log_sec3_q1.txt").read_text()
    assert text.splitlines()[0] == "Study reid · section 3.1 Learning rate · metric mAP (max)"
    assert "=== Trial 2 (optimizer.lr=0.0001): completed at epoch 2, 12.5 s, 0 retries" in text
    assert 'config: {"epochs": 2, "optimizer": {"lr": 0.0001}}' in text
    assert "Epoch 1/2  loss_xent 3.5  train_accuracy 0.25" in text
    block = text[text.index("** Results **"):].splitlines()
    assert block[:5] == ["** Results **", "mAP: 54.5%", "CMC curve", "Rank-1  : 87.0%", "Rank-5  : 93.0%"]
    assert text.count("** Results **") == 1  # only the epoch that evaluated
    assert text.rstrip().endswith("Best by mAP: trial 2 optimizer.lr=0.0001")
