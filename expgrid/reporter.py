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
is due, so trainables pay for serialisation only then. ``report`` may raise :class:`StopTrial`
when the trial must end early (e.g. patience stopping); trainables need not catch it.

Outside a Ray trial the calls go to an in-process session, so a trainable can be called
directly from a test or a notebook: ``expgrid.reporter.run_locally(train, config)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

Checkpoint = Any  # a picklable object, e.g. a dict of state_dicts


class StopTrial(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by :func:`report` to end the trial early; expgrid catches it."""


class Session(Protocol):
    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None: ...

    def restore(self) -> Checkpoint | None: ...

    def checkpoint_due(self, epoch: int) -> bool: ...


class LocalSession:
    """Collects reports in memory; used outside Ray (tests, notebooks, dry runs)."""

    def __init__(self, checkpoint: Checkpoint | None = None, checkpoint_every: int = 1):
        self.history: list[dict[str, Any]] = []
        self.checkpoints: list[Checkpoint] = []
        self._restore = checkpoint
        self._every = max(1, checkpoint_every)

    def report(self, metrics: dict[str, Any], checkpoint: Checkpoint | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint is not None:
            self.checkpoints.append(checkpoint)

    def restore(self) -> Checkpoint | None:
        return self._restore

    def checkpoint_due(self, epoch: int) -> bool:
        return epoch % self._every == 0


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
    session = _session()
    epoch = int(metrics.get("epoch", 0))
    if callable(checkpoint):
        checkpoint = checkpoint() if session.checkpoint_due(epoch) else None
    elif checkpoint is not None and not session.checkpoint_due(epoch):
        checkpoint = None
    session.report(metrics, checkpoint)


def restore() -> Checkpoint | None:
    """The last checkpoint this trial saved, when it is being retried or resumed; else None."""
    return _session().restore()


def run_locally(fn: Callable[..., Any], config: dict[str, Any], *args: Any, **kwargs: Any) -> LocalSession:
    """Call a trainable in this process and return the session holding its reports."""
    session = LocalSession()
    with active(session):
        try:
            fn(config, *args, **kwargs)
        except StopTrial:
            pass
    return session
