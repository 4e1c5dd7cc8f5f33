"""The run-id ledger (``mlflow.json``, rewritten whole) is not saved for every reply of new run
ids — that cost O(trials) per trial — yet every id reaches the file without waiting for the
study's end (a driver killed mid-section leaves them for ``--resume``)."""

from __future__ import annotations

import json
import time

from expgrid.tracking import LEDGER_SAVE_MAX, Tracker, default_tracking_uri
from expgrid.tracking.ledger import Ledger

TRIALS = 40


def _trial_ids(results) -> dict[str, str]:
    try:
        stores = json.loads((results / "mlflow.json").read_text())["stores"]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return next(iter(stores.values()), {}).get("trials", {}).get("s", {})


def test_run_ids_reach_the_ledger_without_a_save_per_reply(tmp_path, monkeypatch):
    saves: list[float] = []
    save = Ledger.save
    monkeypatch.setattr(Ledger, "save", lambda self: (saves.append(time.monotonic()), save(self))[1])
    tracker = Tracker(default_tracking_uri(tmp_path), "ledger", artifact_root=tmp_path / "mlartifacts")
    replies = []
    remember = tracker._remember
    tracker.writer._on_runs = lambda ids: (replies.append(len(ids)), remember(ids))[1]
    try:
        tracker.start_study("ledger", {})
        tracker.start_section("s", "s", {})
        for index in range(TRIALS):  # one at a time: each trial's run id comes back in a reply of its own
            tracker.start_trial("s", index, f"t{index}", {"x": index}, {}, time.time())
            tracker.end_trial("s", index, "FINISHED", {}, time.time())
            assert tracker.flush()
        deadline = time.monotonic() + LEDGER_SAVE_MAX + 30  # the timer's save, on a loaded machine
        while len(_trial_ids(tmp_path)) < TRIALS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(map(int, _trial_ids(tmp_path))) == list(range(TRIALS))  # before finish()
        assert len(replies) > TRIALS  # the study's, the section's and each trial's id in a reply
        assert len(saves) < len(replies)
    finally:
        tracker.finish()
    assert len(_trial_ids(tmp_path)) == TRIALS
