"""The trainable protocol's session (expgrid/reporter.py): when reports are sent and in which
messages, stop reasons, checkpoints and artifact files only when due, and a LocalSession whose
history is exactly the metrics the trainable reported."""

from __future__ import annotations

import math

import pytest

import expgrid.reporter as reporter
from expgrid import wire
from expgrid.stopping import TrialRules

NEVER_BY_TIME = 1e9  # report_interval: batches are cut by epochs and events only, never by the clock


class Recorder(reporter.Session):
    """A session that keeps each delivery (messages, checkpoint state) as it was sent."""

    def __init__(self, rules: TrialRules, saved: dict | None = None):
        super().__init__(rules)
        self.sent: list[tuple[list[wire.Message], dict | None]] = []
        self.saved = saved  # the checkpoint state _load finds, as a retried trial's

    def _deliver(self, messages, state):
        self.sent.append((messages, state))

    def _load(self):
        return self.saved

    def epochs(self) -> list[list[int]]:
        """The epochs of the rows in each delivery."""
        return [[r["epoch"] for m in ms if isinstance(m, wire.Rows) for r in m.rows] for ms, _ in self.sent]


def _rules(**kwargs) -> TrialRules:
    return TrialRules(**{"metric": "score", "mode": "max", "report_interval": NEVER_BY_TIME, **kwargs})


def test_rows_are_batched_until_a_flush_epoch_a_checkpoint_or_the_end():
    session = Recorder(_rules(flush_epochs=frozenset({3}), checkpoint_every=5))
    for epoch in range(1, 8):
        session.report({"epoch": epoch, "score": epoch}, checkpoint=lambda: "ckpt")
    session.flush()
    assert session.epochs() == [[1, 2, 3], [4, 5], [6, 7]]  # rung 3, checkpoint at 5, the trainable's return
    assert [state is not None for _, state in session.sent] == [False, True, False]
    assert all(len(ms) == 1 and isinstance(ms[0], wire.Rows) for ms, _ in session.sent)


def test_with_no_interval_every_report_is_sent_at_once():
    session = Recorder(_rules(report_interval=0.0))
    for epoch in (1, 2, 3):
        session.report({"epoch": epoch, "score": 1.0}, checkpoint=None)
    assert session.epochs() == [[1], [2], [3]]
    session.flush()
    assert len(session.sent) == 3  # nothing left to send


def test_a_nan_loss_stops_the_trial_with_a_stop_message_after_its_row_and_no_checkpoint():
    session = Recorder(_rules())
    session.report({"epoch": 1, "loss": 1.0, "score": 1.0}, checkpoint="c1")
    with pytest.raises(reporter.StopTrial, match="diverged"):
        session.report({"epoch": 2, "loss": math.nan, "score": 2.0}, checkpoint="c2")
    messages, state = session.sent[-1]
    assert [type(m) for m in messages] == [wire.Rows, wire.Stopped]
    assert messages[1].reason == "diverged" and state is None
    assert all("expgrid_stop" not in row and set(row) == {"epoch", "loss", "score"} for row in messages[0].rows)


def test_patience_running_out_stops_the_trial_as_early_stopped():
    session = Recorder(_rules(monitor="loss", monitor_mode="min", patience=2))
    losses = [1.0, 0.5, 0.6, 0.7, 0.4]
    with pytest.raises(reporter.StopTrial, match="early_stopped"):
        for epoch, loss in enumerate(losses, start=1):
            session.report({"epoch": epoch, "loss": loss, "score": -loss}, checkpoint=None)
    assert epoch == 4  # two epochs without a better loss
    assert session.sent[-1][0][-1] == wire.Stopped("early_stopped")


def test_a_checkpoint_callable_is_called_only_on_due_epochs_and_at_a_new_best_when_kept():
    calls: list[int] = []
    session = Recorder(_rules(checkpoint_every=3, keep_best_checkpoint=True, report_interval=0.0))
    for epoch, score in enumerate([1, 0, 0, 0, 5, 0], start=1):
        session.report({"epoch": epoch, "score": score}, checkpoint=lambda epoch=epoch: calls.append(epoch) or epoch)
    assert calls == [1, 3, 5, 6]  # new bests at 1 and 5; every third epoch
    assert [s["user"] for _, s in session.sent if s is not None] == [1, 3, 5, 6]


def test_artifact_files_are_built_at_the_last_epoch_a_rung_or_a_stop_and_sent_beside_the_row():
    built: list[int] = []

    def files(epoch):
        return lambda: built.append(epoch) or {"e.txt": str(epoch)}

    session = Recorder(_rules(last_epoch=5, flush_epochs=frozenset({2})))
    for epoch in range(1, 6):
        session.report({"epoch": epoch, "score": epoch}, checkpoint=None, artifacts=files(epoch))
    assert built == [2, 5]
    sent = [m for ms, _ in session.sent for m in ms if isinstance(m, wire.Artifacts)]
    assert sent == [wire.Artifacts({"e.txt": "2"}, epoch=2), wire.Artifacts({"e.txt": "5"}, epoch=5)]
    assert session.epochs() == [[1, 2], [3, 4, 5]]  # the files go with their epoch's batch

    stopped = Recorder(_rules(last_epoch=5))
    with pytest.raises(reporter.StopTrial):
        stopped.report({"epoch": 1, "loss": math.inf, "score": 0.0}, checkpoint=None, artifacts=files(1))
    assert [type(m) for m in stopped.sent[0][0]] == [wire.Rows, wire.Artifacts, wire.Stopped]


def test_a_mapping_of_files_is_sent_with_every_report():
    session = Recorder(_rules())
    session.report({"epoch": 1, "score": 1}, checkpoint=None, artifacts={"a.txt": "x"})
    assert session.sent[0][0][1] == wire.Artifacts({"a.txt": "x"}, epoch=1)


def test_a_local_session_keeps_pure_metrics_files_and_the_stop_reason():
    def train(config):
        for epoch in range(1, 5):
            loss = math.nan if epoch == 3 else 1.0 / epoch
            reporter.report({"epoch": epoch, "loss": loss, "score": epoch}, checkpoint={"epoch": epoch},
                            artifacts=lambda epoch=epoch: {"last.json": {"epoch": epoch}})  # fmt: skip

    session = reporter.run_locally(train, {}, session=reporter.LocalSession(_rules(last_epoch=4)))
    assert [set(row) for row in session.history] == [{"epoch", "loss", "score"}] * 3
    assert session.stop == "diverged"
    assert session.artifacts == {"last.json": {"epoch": 3}}  # built at the stop
    assert session.checkpoints == [{"epoch": 1}, {"epoch": 2}]
    assert reporter.run_locally(lambda c: reporter.report({"epoch": 1, "score": 1}), {}).stop is None


def test_restore_hands_back_the_checkpoint_and_the_patience_state():
    session = reporter.LocalSession(_rules(monitor="loss", patience=3), checkpoint={"epoch": 7})
    assert session.restore() == {"epoch": 7}
    fresh = Recorder(_rules(monitor="loss", patience=1),
                     saved={"user": "u", "watcher": {"best_monitor": 0.1, "stale": 0, "best_metric": 9.0}})
    assert fresh.restore() == "u"
    with pytest.raises(reporter.StopTrial, match="early_stopped"):  # 0.5 is no better than the restored 0.1
        fresh.report({"epoch": 8, "loss": 0.5, "score": 1.0}, checkpoint=None)
