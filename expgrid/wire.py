"""Typed messages from a trial process to the driver, and the one way they travel.

A trial process (an expgrid session in a Tune trial, a pack of trials, a Ray Train worker) tells
the driver what happened as a list of messages, one frozen dataclass per kind:

===============  ===========================================================================
``Rows``         epoch rows, each exactly the metrics dict the trainable reported
``Stopped``      the trial ended itself: ``diverged`` or ``early_stopped`` (``expgrid.stopping``)
``Artifacts``    files the trainable left (name → str, bytes or JSON-able data) and their epoch
``Placed``       the Ray node the reporting process runs on
``Restarted``    Ray Train restarted the trial's workers from its last checkpoint
``PackEvent``    a packed trial started, is retried after an error, or ended (time, error)
===============  ===========================================================================

Every message but ``Placed`` names its trial by ``trial``, its index in the section; ``None``
means "the one trial this Tune trial runs" (a pack names each).

On the wire, :func:`encode` turns the messages into the result a process hands to Tune (or to
Ray Train, which forwards it to Tune)::

    {<the newest row's metrics>..., "expgrid_wire": [{"kind": "rows", "trial": None,
                                                      "rows": [{...}, ...]}, ...]}

The newest epoch row rides at the top level because Tune reads it there (ASHA's ``epoch`` and
metric, the checkpoint score); the payload under :data:`WIRE_KEY` is a list (Tune flattens
nested dicts of a result, not lists) of plain dicts, one per message: ``kind`` plus the
dataclass's fields, with tuples as lists. :func:`decode` takes the payload out of a result again,
in place: the driver does that in its Tune callback, before Tune keeps the result, so Tune's
saved state and everything after it sees only the user's metrics. Both ends run the same
expgrid, so the format has no version; a kind or field this module does not know is refused
with :class:`WireError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, ClassVar

WIRE_KEY = "expgrid_wire"  # the one key of a Tune result that is not the user's


class WireError(ValueError):
    """A payload this version of expgrid cannot read."""


@dataclasses.dataclass(frozen=True)
class Rows:
    """Epoch rows of one trial, oldest first: each the trainable's own metrics dict."""

    kind: ClassVar[str] = "rows"
    rows: tuple[Mapping[str, Any], ...]
    trial: int | None = None


@dataclasses.dataclass(frozen=True)
class Stopped:
    """The trial stopped itself: the reason (an ASHA cut is the driver's own knowledge: the
    Tune adapter reports it to the section's events, it never travels)."""

    kind: ClassVar[str] = "stopped"
    reason: str
    trial: int | None = None


@dataclasses.dataclass(frozen=True)
class Artifacts:
    """A report's files (file name → content) and the epoch they came with."""

    kind: ClassVar[str] = "artifacts"
    files: Mapping[str, Any]
    epoch: int
    trial: int | None = None


@dataclasses.dataclass(frozen=True)
class Placed:
    """The Ray node id of the process that sent this payload."""

    kind: ClassVar[str] = "placed"
    node: str


@dataclasses.dataclass(frozen=True)
class Restarted:
    """Ray Train restarted the trial's workers (a failure): the driver counts a retry."""

    kind: ClassVar[str] = "restarted"
    trial: int | None = None


@dataclasses.dataclass(frozen=True)
class PackEvent:
    """A packed trial's start, retry (after ``error``) or end (``error`` None when it did not fail)."""

    kind: ClassVar[str] = "pack"
    event: str  # one of EVENTS
    trial: int
    time: float  # unix seconds, on the trial's node
    error: str | None = None

    EVENTS: ClassVar[tuple[str, ...]] = ("start", "retry", "end")

    def __post_init__(self) -> None:
        if self.event not in self.EVENTS:
            raise WireError(f"pack event: one of {', '.join(self.EVENTS)}, got {self.event!r}")


Message = Rows | Stopped | Artifacts | Placed | Restarted | PackEvent
KINDS: dict[str, type] = {cls.kind: cls for cls in (Rows, Stopped, Artifacts, Placed, Restarted, PackEvent)}


def encode(messages: Sequence[Message]) -> dict[str, Any]:
    """The result to report for ``messages``: the newest row's metrics at the top level (for
    Tune and its scheduler) and every message under :data:`WIRE_KEY`."""
    payload = []
    newest: Mapping[str, Any] = {}
    for message in messages:
        if type(message) not in KINDS.values():
            raise WireError(f"not a wire message: {type(message).__name__}")
        # Shallow, not dataclasses.asdict: rows and files are plain data already, and a deep
        # copy of every row per result is what the driver would pay for.
        fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
        if isinstance(message, Rows):
            fields["rows"] = list(message.rows)
            if message.rows:
                newest = message.rows[-1]
        payload.append({"kind": message.kind, **fields})
    if WIRE_KEY in newest:
        raise WireError(f"a metric may not be named {WIRE_KEY!r}")
    return {**newest, WIRE_KEY: payload}


def decode(result: MutableMapping[str, Any]) -> list[Message]:
    """The messages of a Tune result, taken out of it (the result keeps only the metrics).
    A result without a payload (none of expgrid's) holds no messages."""
    payload = result.pop(WIRE_KEY, None)
    if payload is None:
        return []
    if not isinstance(payload, list):
        raise WireError(f"{WIRE_KEY}: a list of messages, got {type(payload).__name__}")
    messages: list[Message] = []
    for item in payload:
        if not isinstance(item, Mapping) or "kind" not in item:
            raise WireError(f"{WIRE_KEY}: a message is a mapping with a 'kind', got {str(item)[:80]!r}")
        fields = dict(item)
        kind = fields.pop("kind")
        cls = KINDS.get(kind)
        if cls is None:
            raise WireError(f"{WIRE_KEY}: unknown message kind {kind!r} (known: {', '.join(KINDS)})")
        if cls is Rows and isinstance(fields.get("rows"), list):
            fields["rows"] = tuple(fields["rows"])
        try:
            messages.append(cls(**fields))
        except TypeError as e:
            raise WireError(f"{WIRE_KEY}: a {kind!r} message: {e}") from None
    return messages
