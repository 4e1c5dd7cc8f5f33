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

Outside a Ray trial the calls go to an in-process session, so a trainable can be called
directly from a test or a notebook: ``expgrid.reporter.run_locally(train, config)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from expgrid.stopping import STOP_KEY, TrialRules, Watcher

Checkpoint = Any  # a picklable object, e.g. a dict of state_dicts


class StopTrial(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by :func:`report` to end the trial early; expgrid catches it."""


class Session:
    """Applies the trial rules to each report, batches reports, and decides when a checkpoint
    is due; subclasses deliver batches of rows (with a checkpoint state) and load checkpoints."""

    def __init__(self, rules: TrialRules | None = None):
        self.rules = rules or TrialRules(metric="", mode="max", report_interval=0.0)
        self.watcher = Watcher(self.rules)
        self._rows: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | Callable[[], Checkpoint] | None) -> None:
        stop, best_now = self.watcher.observe(metrics)
        epoch = int(metrics.get("epoch", 0))
        due = epoch % max(1, self.rules.checkpoint_every) == 0 or (best_now and self.rules.keep_best_checkpoint)
        state = None
        if checkpoint is not None and due and stop is None:
            user = checkpoint() if callable(checkpoint) else checkpoint
            state = {"user": user, "watcher": self.watcher.state()}
        self._rows.append({**metrics, STOP_KEY: stop} if stop else dict(metrics))
        now = time.monotonic()
        if state is not None or stop or epoch in self.rules.flush_epochs or now - self._last_flush >= self.rules.report_interval:
            self.flush(state)
        if stop:
            raise StopTrial(stop)

    def flush(self, state: dict[str, Any] | None = None) -> None:
        """Send the rows gathered since the last flush (called again when the trainable returns)."""
        if not self._rows and state is None:
            return
        rows, self._rows = self._rows, []
        self._last_flush = time.monotonic()
        self._deliver(rows, state)

    def restore(self) -> Checkpoint | None:
        state = self._load()
        if state is None:
            return None
        if state.get("watcher") is not None:
            self.watcher.load(state["watcher"])
        return state["user"]

    def _deliver(self, rows: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _load(self) -> dict[str, Any] | None:
        raise NotImplementedError


class LocalSession(Session):
    """Collects reports in memory; used outside Ray (tests, notebooks, dry runs)."""

    def __init__(self, rules: TrialRules | None = None, checkpoint: Checkpoint | None = None):
        """``checkpoint``: what ``restore()`` returns, as if the trial were being retried."""
        super().__init__(rules)
        self.history: list[dict[str, Any]] = []
        self.checkpoints: list[Checkpoint] = []  # what the trainable handed over, in order
        self._restore = None if checkpoint is None else {"user": checkpoint, "watcher": None}

    def _deliver(self, rows: list[dict[str, Any]], state: dict[str, Any] | None) -> None:
        self.history.extend(rows)
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


def report(metrics: dict[str, Any], checkpoint: Checkpoint | Callable[[], Checkpoint] | None = None) -> None:
    """Report one epoch's metrics (with an ``epoch`` key) and, when due, a checkpoint."""
    _session().report(metrics, checkpoint)


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
