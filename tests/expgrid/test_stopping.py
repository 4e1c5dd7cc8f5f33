"""How a trial decides its own end from its reports: divergence on a NaN / infinite loss or metric,
early stopping after `patience` epochs without an improvement of more than `min_delta`, the best
epoch so far by the study metric; and the rules travelling as JSON (Tune's experiment state)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expgrid.stopping import DIVERGED, EARLY_STOPPED, TrialRules, Watcher, is_finite_number


def observe_all(watcher: Watcher, rows: list[dict]) -> list[tuple[str | None, bool]]:
    return [watcher.observe(row) for row in rows]


@pytest.mark.parametrize("row", [
    {"val_accuracy": 0.5, "train_loss": math.nan},
    {"val_accuracy": 0.5, "val_loss": math.inf},
    {"val_accuracy": 0.5, "loss_reg": -math.inf},
    {"val_accuracy": math.nan, "train_loss": 0.3},  # the study metric itself
    {"val_accuracy": math.inf},
])  # fmt: skip
def test_a_nan_or_infinite_loss_or_metric_diverges_and_is_never_best(row):
    watcher = Watcher(TrialRules(metric="val_accuracy", mode="max"))
    assert watcher.observe(row) == (DIVERGED, False)
    assert watcher.best_metric is None


def test_non_finite_values_of_other_metrics_or_non_float_losses_do_not_diverge():
    watcher = Watcher(TrialRules(metric="val_accuracy", mode="max"))
    assert watcher.observe({"val_accuracy": 0.5, "grad_norm": math.inf, "lr": math.nan}) == (None, True)
    assert watcher.observe({"val_accuracy": 0.4, "train_loss": 3, "loss_name": "ce"}) == (None, False)
    assert watcher.observe({"train_loss": 0.1}) == (None, False)  # the metric missing: not best, not diverged


@pytest.mark.parametrize("mode, values, best", [
    ("max", [0.1, 0.3, 0.2, 0.3, 0.4], [True, True, False, False, True]),  # a tie is not a new best
    ("min", [0.9, 0.5, 0.7, 0.5, 0.1], [True, True, False, False, True]),
])  # fmt: skip
def test_the_best_epoch_is_a_strict_improvement_by_the_study_metric(mode, values, best):
    watcher = Watcher(TrialRules(metric="m", mode=mode))
    assert [b for _, b in observe_all(watcher, [{"m": v} for v in values])] == best
    assert watcher.best_metric == (max if mode == "max" else min)(values)


def test_booleans_and_strings_are_not_metric_values():
    watcher = Watcher(TrialRules(metric="m", mode="max"))
    assert watcher.observe({"m": True}) == (None, False)
    assert watcher.observe({"m": "0.9"}) == (None, False)
    assert watcher.observe({"m": 2}) == (None, True)  # an int is a number
    assert not is_finite_number(True) and not is_finite_number(math.nan) and is_finite_number(3)


def test_patience_counts_epochs_without_improvement_and_an_improvement_resets_it():
    rules = TrialRules(metric="acc", mode="max", monitor="val_loss", monitor_mode="min", patience=2)
    watcher = Watcher(rules)
    losses = [1.0, 0.8, 0.9, 0.7, 0.75, 0.72]
    results = observe_all(watcher, [{"acc": 0.0, "val_loss": v} for v in losses])
    # 0.9 is stale 1, 0.7 improves (reset), 0.75 stale 1, 0.72 stale 2 = patience: stop
    assert [stop for stop, _ in results] == [None, None, None, None, None, EARLY_STOPPED]
    assert watcher.best_monitor == 0.7 and watcher.stale == 2


def test_an_improvement_of_at_most_min_delta_does_not_count():
    rules = TrialRules(metric="acc", mode="max", monitor="acc", monitor_mode="max", patience=2, min_delta=0.05)
    watcher = Watcher(rules)
    results = observe_all(watcher, [{"acc": v} for v in (0.50, 0.52, 0.54)])
    # 0.52 and 0.54 are within min_delta of 0.50; 0.54 is the second stale epoch
    assert [stop for stop, _ in results] == [None, None, EARLY_STOPPED]
    # the stop still reports that its epoch is the best so far by the study metric
    assert results[2] == (EARLY_STOPPED, True)
    assert watcher.best_monitor == 0.50


def test_without_a_monitor_a_trial_never_stops_early():
    watcher = Watcher(TrialRules(metric="loss_val", mode="min", patience=1))
    results = observe_all(watcher, [{"loss_val": 1.0}] * 10)
    assert all(stop is None for stop, _ in results)


def test_epochs_without_the_monitor_leave_patience_as_it_is():
    watcher = Watcher(TrialRules(metric="m", mode="max", monitor="v", monitor_mode="min", patience=1))
    assert watcher.observe({"m": 1, "v": 1.0}) == (None, True)
    assert watcher.observe({"m": 1}) == (None, False)  # no monitor value this epoch
    assert watcher.observe({"m": 1, "v": 2.0}) == (EARLY_STOPPED, False)


def test_a_restored_watcher_continues_where_it_was():
    rules = TrialRules(metric="m", mode="max", monitor="v", monitor_mode="min", patience=3)
    rows = [{"m": m, "v": v} for m, v in [(0.1, 1.0), (0.4, 0.9), (0.3, 0.95), (0.2, 0.91), (0.5, 0.92), (0.6, 0.5)]]
    straight = observe_all(Watcher(rules), rows)
    first = Watcher(rules)
    observe_all(first, rows[:3])
    restored = Watcher(rules)
    restored.load(json.loads(json.dumps(first.state())))  # a checkpoint keeps it as JSON
    assert straight[3:] == observe_all(restored, rows[3:])
    assert straight[4] == (EARLY_STOPPED, True)


rules_strategy = st.builds(
    TrialRules,
    metric=st.text(min_size=1, max_size=12),
    mode=st.sampled_from(["min", "max"]),
    keep_best_checkpoint=st.booleans(),
    select_monitor=st.none() | st.text(min_size=1, max_size=12),
    select_mode=st.none() | st.sampled_from(["min", "max"]),
    monitor=st.none() | st.text(min_size=1, max_size=12),
    monitor_mode=st.sampled_from(["min", "max"]),
    patience=st.integers(0, 50),
    min_delta=st.floats(0, 1, allow_nan=False),
    checkpoint_every=st.integers(1, 10),
    report_interval=st.floats(0, 60, allow_nan=False),
    flush_epochs=st.frozensets(st.integers(1, 500), max_size=8),
    last_epoch=st.none() | st.integers(1, 500),
)


@given(rules_strategy)
def test_rules_survive_a_json_round_trip(rules):
    data = json.loads(json.dumps(rules.to_json()))  # what Tune's experiment state keeps
    assert data["flush_epochs"] == sorted(rules.flush_epochs)
    assert TrialRules.from_json(data) == rules


def test_rules_from_json_without_flush_epochs():
    assert TrialRules.from_json({"metric": "m", "mode": "max"}) == TrialRules(metric="m", mode="max")


def reference_best(values: list[float], mode: str) -> list[bool]:
    """The best-so-far flags computed the obvious way: strictly better than every earlier value."""
    better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
    return [all(better(v, earlier) for earlier in values[:i]) for i, v in enumerate(values)]


def reference_stop(values: list[float], mode: str, patience: int, min_delta: float) -> int | None:
    """The epoch index at which patience runs out: `patience` epochs in a row without beating the
    best so far by more than `min_delta`."""
    best, stale = values[0], 0
    for i, v in enumerate(values[1:], start=1):
        if (v > best + min_delta) if mode == "max" else (v < best - min_delta):
            best, stale = v, 0
        else:
            stale += 1
            if stale >= patience:
                return i
    return None


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=30), st.sampled_from(["min", "max"]))
def test_best_epochs_match_a_running_best(values, mode):
    watcher = Watcher(TrialRules(metric="m", mode=mode))
    assert [b for _, b in observe_all(watcher, [{"m": v} for v in values])] == reference_best(values, mode)


@given(st.lists(finite, min_size=1, max_size=30), st.sampled_from(["min", "max"]), st.integers(1, 5),
       st.sampled_from([0.0, 0.5, 10.0]))  # fmt: skip
def test_early_stop_epoch_matches_patience_counted_by_hand(values, mode, patience, min_delta):
    rules = TrialRules(metric="m", mode="max", monitor="v", monitor_mode=mode, patience=patience, min_delta=min_delta)
    watcher = Watcher(rules)
    stopped_at = None
    for i, v in enumerate(values):
        stop, _ = watcher.observe({"m": 0.0, "v": v})
        if stop is not None:
            assert stop == EARLY_STOPPED
            stopped_at = i
            break
    assert stopped_at == reference_stop(values, mode, patience, min_delta)
