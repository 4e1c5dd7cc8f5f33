"""The trial → driver wire (expgrid/wire.py): every kind survives encode → pickle → decode,
the result keeps only the user's metrics once decoded, and what it cannot read is refused."""

from __future__ import annotations

import pickle

import pytest

from expgrid import wire

ROWS = ({"epoch": 1, "loss": 0.5, "note": "warm-up"}, {"epoch": 2, "loss": 0.25, "score": 3})
EVERY_KIND = [
    wire.Placed("f00dfeed" * 7),
    wire.Restarted(),
    wire.Rows(ROWS),
    wire.Artifacts({"confusion.csv": "a,b\n1,2\n", "raw.bin": b"\x00\xff", "sub/x.json": {"k": [1, 2]}}, epoch=2),
    wire.Stopped("diverged"),
    wire.Rows(({"epoch": 3, "loss": 0.1},), trial=7),
    wire.Stopped("early_stopped", trial=7),
    wire.Artifacts({"a.txt": "x"}, epoch=3, trial=7),
    wire.Restarted(trial=7),
    wire.PackEvent("start", 7, 1700000000.5),
    wire.PackEvent("retry", 7, 1700000001.0, "ValueError: boom"),
    wire.PackEvent("end", 7, 1700000002.0, None),
]


def test_every_kind_survives_the_round_trip_in_order():
    result = wire.encode(EVERY_KIND)
    # What Ray carries from the trial process to the driver is a pickle of the result.
    decoded = wire.decode(pickle.loads(pickle.dumps(result)))
    assert decoded == EVERY_KIND
    assert {type(m) for m in decoded} == set(wire.KINDS.values())  # the list holds every kind


def test_the_result_carries_the_newest_row_at_the_top_and_only_metrics_once_decoded():
    result = wire.encode([wire.Placed("n1"), wire.Rows(ROWS), wire.Stopped("diverged")])
    assert {k: v for k, v in result.items() if k != wire.WIRE_KEY} == ROWS[-1]  # what ASHA and Tune read
    assert isinstance(result[wire.WIRE_KEY], list)  # Tune flattens nested dicts of a result, not lists
    tune_result = {**result, "training_iteration": 4, "trial_id": "abc"}  # keys Tune adds
    wire.decode(tune_result)
    assert tune_result == {**ROWS[-1], "training_iteration": 4, "trial_id": "abc"}


def test_a_payload_without_rows_has_no_metrics_at_the_top():
    result = wire.encode([wire.Placed("n1"), wire.PackEvent("end", 3, 5.0)])
    assert list(result) == [wire.WIRE_KEY]


def test_a_result_without_a_payload_holds_no_messages():
    assert wire.decode({"epoch": 1, "loss": 0.1}) == []


def test_decoding_leaves_the_rows_as_the_trainable_reported_them():
    rows = wire.decode(wire.encode([wire.Rows(ROWS)]))[0].rows
    assert rows == ROWS and all(not any(k.startswith("expgrid") for k in row) for row in rows)


def test_an_unknown_kind_is_refused_with_what_is_known():
    result = {wire.WIRE_KEY: [{"kind": "telemetry", "trial": None}]}
    with pytest.raises(wire.WireError, match=r"unknown message kind 'telemetry' \(known: rows, stopped, artifacts, "
                                             r"placed, restarted, pack\)"):  # fmt: skip
        wire.decode(result)


@pytest.mark.parametrize("payload, says", [
    ({"kind": "rows"}, "a list of messages, got dict"),
    ([["rows", []]], "a message is a mapping with a 'kind'"),
    ([{"kind": "stopped", "trial": 1}], "a 'stopped' message: .*reason"),
    ([{"kind": "placed", "node": "n", "colour": "red"}], "a 'placed' message: .*colour"),
    ([{"kind": "pack", "event": "paused", "trial": 1, "time": 0.0}], "pack event: one of start, retry, end"),
])  # fmt: skip
def test_malformed_payloads_are_refused(payload, says):
    with pytest.raises(wire.WireError, match=says):
        wire.decode({wire.WIRE_KEY: payload})


def test_only_wire_messages_are_sent():
    with pytest.raises(wire.WireError, match="not a wire message: dict"):
        wire.encode([{"epoch": 1}])  # type: ignore[list-item]
    with pytest.raises(wire.WireError, match="may not be named 'expgrid_wire'"):
        wire.encode([wire.Rows(({"epoch": 1, wire.WIRE_KEY: 1},))])
