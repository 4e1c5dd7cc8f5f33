"""The trainable protocol: how a trial reports metrics and saves / restores checkpoints.

A trainable is a plain function of its config (and, for registered trainables that load data,
the shared data)::

    import expgrid

    def train(config):
        state = expgrid.restore()            # None on a first start; the last checkpoint on a retry
        start = state["epoch"] + 1 if state else 1
        for epoch in range(start, config["epochs"] + 1):
            ...
            expgrid.report({"epoch": epoch, "val_loss": vl, "val_accuracy": va},
                           checkpoint=lambda: {"epoch": epoch, "model": model.state_dict()})

``report`` is called once per epoch with an ``epoch`` key (1-based). ``checkpoint`` is a picklable
object, or a zero-argument callable returning one: it is only called on the epochs a checkpoint
is due (every ``checkpoint_every`` epochs, and at a new best epoch when the section selects best
epochs), so trainables pay for serialisation only then. ``report`` raises :class:`StopTrial`
when the trial must end (a NaN/infinite loss, or patience ran out); trainables need not catch it.

``artifacts`` are files the trial leaves beside its metrics (a confusion matrix, per-layer
gradient norms): a mapping of file name (``"confusion_matrix.csv"``, may contain ``/``) to its
content (``str``, ``bytes``, or anything JSON can write), or a zero-argument callable returning
one. A callable is only called when the files are due: the trial's planned last epoch, a report
that stops the trial, and ASHA's rung epochs (where the trial may be cut). They travel beside
that report's row (``expgrid.wire.Artifacts``, never inside the metrics); the driver writes them to ``<results>/sections/<id>/trials/<index>/`` and to the
trial's MLflow run, a later report's file replacing an earlier one of the same name.

Outside a Ray trial the calls go to an in-process session, so a trainable can be called
directly from a test or a notebook: ``expgrid.reporter.run_locally(train, config)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any

from expgrid import wire
from expgrid.stopping import EARLY_STOPPED, MissingMonitor, TrialRules, Watcher

Checkpoint = Any  # a picklable object, e.g. a dict of state_dicts
Artifacts = Mapping[str, Any]  # file name → str, bytes or JSON-able content


class StopTrial(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by :func:`report` to end the trial early; expgrid catches it."""


class Session:
    """Applies the trial rules to each report, batches reports, and decides when a checkpoint
    is due; subclasses deliver batches of messages (``expgrid.wire``: the rows, and the files
    and stop reason that came with them) with a checkpoint state, and load checkpoints."""

    def __init__(self, rules: TrialRules | None = None):
        self.rules = rules or TrialRules(metric="", mode="max", report_interval=0.0)
        self.watcher = Watcher(self.rules)
        self._rows: list[dict[str, Any]] = []
        self._files: wire.Artifacts | None = None
        self._stop: str | None = None
        self._last_flush = time.monotonic()

    def report(
        self,
        metrics: dict[str, Any],
        checkpoint: Checkpoint | Callable[[], Checkpoint] | None,
        artifacts: Artifacts | Callable[[], Artifacts] | None = None,
    ) -> None:
        try:
            stop, best_now = self.watcher.observe(metrics)
        except MissingMonitor:  # the trial fails; the epoch it reported is kept with its record
            self._rows.append(dict(metrics))
            self.flush()
            raise
        epoch = int(metrics.get("epoch", 0))
        due = epoch % max(1, self.rules.checkpoint_every) == 0 or (best_now and self.rules.keep_best_checkpoint)
        last = self.rules.keep_last_checkpoint and stop in (None, EARLY_STOPPED) and (
            epoch == self.rules.last_epoch or epoch in self.rules.flush_epochs or stop == EARLY_STOPPED)
        state = None
        if checkpoint is not None and (due or last) and (stop is None or last):
            user = checkpoint() if callable(checkpoint) else checkpoint
            # "epoch": which epoch the state is of, for a test evaluation (expgrid.test_eval)
            state = {"user": user, "watcher": self.watcher.state(), "epoch": epoch}
        files = None
        if artifacts is not None and (
            not callable(artifacts) or stop or epoch == self.rules.last_epoch or epoch in self.rules.flush_epochs
        ):
            files = checked_artifacts(artifacts() if callable(artifacts) else artifacts)
        self._rows.append(dict(metrics))
        if files:  # a report with files is sent at once, so a batch holds at most one set
            self._files = wire.Artifacts(files=files, epoch=epoch)
        if stop:
            self._stop = stop
        now = time.monotonic()
        if (state is not None or stop or files or epoch in self.rules.flush_epochs
                or now - self._last_flush >= self.rules.report_interval):  # fmt: skip
            self.flush(state)
        if stop:
            raise StopTrial(stop)

    def flush(self, state: dict[str, Any] | None = None) -> None:
        """Send the rows gathered since the last flush (called again when the trainable returns)."""
        if not self._rows and state is None:
            return
        messages: list[wire.Message] = [wire.Rows(tuple(self._rows))] if self._rows else []
        if self._files is not None:
            messages.append(self._files)
        if self._stop is not None:
            messages.append(wire.Stopped(self._stop))
        self._rows, self._files, self._stop = [], None, None
        self._last_flush = time.monotonic()
        self._deliver(messages, state)

    def restore(self) -> Checkpoint | None:
        state = self._load()
        if state is None:
            return None
        if state.get("watcher") is not None:
            self.watcher.load(state["watcher"])
        return state["user"]

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        """Send ``messages`` (rows first) and, when not None, the checkpoint ``state``."""
        raise NotImplementedError

    def _load(self) -> dict[str, Any] | None:
        raise NotImplementedError


def checked_artifacts(files: Any) -> dict[str, Any]:
    """``files`` as a plain dict, after checking each name is a relative path inside the trial's
    folder (no ``..``, not absolute) and each content is text, bytes or JSON-able data."""
    if not isinstance(files, Mapping):
        raise TypeError(f"artifacts must be a mapping of file name to content, got {type(files).__name__}")
    out = {}
    for name, content in files.items():
        path = PurePosixPath(str(name))
        if not str(name) or path.is_absolute() or ".." in path.parts or "\\" in str(name):
            raise ValueError(f"artifact name {name!r}: a relative file name such as 'confusion_matrix.csv'")
        if not isinstance(content, (str, bytes, dict, list, tuple, int, float)):
            raise TypeError(f"artifact {name!r}: str, bytes or JSON-able content, got {type(content).__name__}")
        out[str(path)] = content
    return out


class LocalSession(Session):
    """Collects reports in memory; used outside Ray (tests, notebooks, dry runs)."""

    def __init__(self, rules: TrialRules | None = None, checkpoint: Checkpoint | None = None):
        """``checkpoint``: what ``restore()`` returns, as if the trial were being retried."""
        super().__init__(rules)
        self.history: list[dict[str, Any]] = []  # the metrics dicts reported, in order
        self.checkpoints: list[Checkpoint] = []  # what the trainable handed over, in order
        self.artifacts: dict[str, Any] = {}  # file name → content, the latest of each name
        self.stop: str | None = None  # why the trial stopped itself (diverged, early_stopped)
        self._restore = None if checkpoint is None else {"user": checkpoint, "watcher": None}

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        for message in messages:
            if isinstance(message, wire.Rows):
                self.history.extend(message.rows)
            elif isinstance(message, wire.Artifacts):
                self.artifacts.update(message.files)
            elif isinstance(message, wire.Stopped):
                self.stop = message.reason
        if state is not None:
            self.checkpoints.append(state["user"])

    def _load(self) -> dict[str, Any] | None:
        return self._restore


_current: Session | None = None


@contextlib.contextmanager
def active(session: Session) -> Iterator[Session]:
    """Make ``session`` receive the reports of code run inside the ``with`` block."""
    global _current
    previous, _current = _current, session
    try:
        yield session
    finally:
        _current = previous


def _session() -> Session:
    global _current
    if _current is None:
        _current = LocalSession()
    return _current


def report(
    metrics: dict[str, Any],
    checkpoint: Checkpoint | Callable[[], Checkpoint] | None = None,
    *,
    artifacts: Artifacts | Callable[[], Artifacts] | None = None,
) -> None:
    """Report one epoch's metrics (with an ``epoch`` key) and, when due, a checkpoint and the
    trial's artifact files (see the module docstring)."""
    _session().report(metrics, checkpoint, artifacts)


def rules() -> TrialRules:
    """The rules of the trial this code runs in (which epochs ASHA compares, early stopping,
    best-epoch selection), so a trainable can skip work no rule reads; defaults outside a trial."""
    return _session().rules


def restore() -> Checkpoint | None:
    """The last checkpoint this trial saved, when it is being retried or resumed; else None."""
    return _session().restore()


def data_parallel(fn: Callable[..., Any], config: dict[str, Any], data: Any = None) -> None:
    """Run ``fn(config, data)`` (or ``fn(config)`` when ``data`` is None) as one trial on
    ``config["workers"]`` processes with ``torch.distributed`` initialised.

    Inside a Ray trial the processes are Ray Train workers (gloo on CPU, nccl on GPU), each
    reserving the section's per-trial ``resources`` (``config["gpu_per_worker"]``, when set,
    replaces the GPU share): expgrid reads both keys when it plans the section, so they are the
    only place to say it. The workers' reports reach this trial, so early stopping, ASHA and
    best-config selection see them as a one-process trial's. Every rank must call :func:`report`
    with the same metrics at the same epochs (rank 0's are kept). Outside Ray, or with
    ``workers`` absent or 1, ``fn`` runs once in this process."""
    workers = config.get("workers")
    launch = getattr(_session(), "launch_data_parallel", None)
    if launch is None or not isinstance(workers, int) or workers <= 1:
        fn(config, data) if data is not None else fn(config)
        return
    launch(fn, config, data, workers)


def run_locally(fn: Callable[..., Any], config: dict[str, Any], *args: Any, session: LocalSession | None = None,
                **kwargs: Any) -> LocalSession:  # fmt: skip
    """Call a trainable in this process and return the session holding its reports."""
    session = session or LocalSession()
    with active(session):
        try:
            fn(config, *args, **kwargs)
        except StopTrial:
            pass
        session.flush()
    return session
