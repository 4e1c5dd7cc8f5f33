"""The test evaluation of a section's best trial as one small Ray task (see ``expgrid.test_eval``).

Driver side: :func:`run` starts the task with the trial's resources and waits for it, giving up
(and cancelling it) when the study is asked to stop. Task side: :func:`_evaluate` finds the
trial's checkpoint of the selected epoch among its checkpoint folders, unpickles it there (the
state holds torch tensors; the driver never loads them) and calls the trainable's ``evaluate``
hook with the trial's config, the checkpoint the trial handed over and the data (an object
reference, fetched zero-copy where the task runs).
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray

from cluster.trial_side import _CHECKPOINT_FILE
from expgrid.interrupts import Interrupted

WAIT_STEP = 0.5  # seconds between looks at whether the study was asked to stop


class TestEvalError(Exception):
    """Why a test evaluation gave no metrics (one line); the study goes on."""

    __test__ = False  # not a pytest test class


def run(evaluate: Callable[..., Any], config: dict[str, Any], folders: list[str], epoch: Any,
        best_value: float | None, data: Any, resources: Mapping[str, float], code_path: str,
        stop_requested: Callable[[], bool]) -> dict[str, float]:  # fmt: skip
    """The hook's test metrics, from one Ray task reserving ``resources`` (cpu, gpu)."""
    task = _evaluate.options(num_cpus=float(resources.get("cpu", 1.0)), num_gpus=float(resources.get("gpu", 0.0)))
    ref = task.remote(evaluate, config, folders, epoch, best_value, data, code_path)
    while not ray.wait([ref], timeout=WAIT_STEP)[0]:
        if stop_requested():
            ray.cancel(ref, force=True)
            raise Interrupted("stopped during the test evaluation (it runs again at the next run of the study)")
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, TestEvalError):
            raise TestEvalError(str(cause)) from None
        lines = [line for line in f"{type(cause).__name__}: {cause}".splitlines() if line.strip()]
        raise TestEvalError(lines[-1] if lines else type(cause).__name__) from None
    except ray.exceptions.RayError as e:  # the task's worker died (out of memory, a lost node)
        raise TestEvalError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


@ray.remote(max_retries=0)
def _evaluate(evaluate: Callable[..., Any], config: dict[str, Any], folders: list[str], epoch: Any,
              best_value: float | None, data: Any, code_path: str) -> dict[str, float]:  # fmt: skip
    if code_path and code_path not in sys.path:
        sys.path.insert(0, code_path)  # a user's module next to the study
    state = checkpoint_of_epoch(folders, epoch, best_value)
    metrics = evaluate(config, state["user"], data)
    return checked_metrics(metrics)


def checkpoint_of_epoch(folders: list[str], epoch: Any, best_value: float | None) -> dict[str, Any]:
    """The expgrid state of ``epoch`` in the trial's checkpoint folders, newest first; it must be
    this run's: its watcher's running best equals ``best_value`` (from the trial's record)."""
    found = sorted((p for folder in folders if Path(folder).is_dir() for p in Path(folder).rglob(_CHECKPOINT_FILE)),
                   key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    kept = []
    for path in found:
        with open(path, "rb") as f:
            state = pickle.load(f)
        if isinstance(state, dict) and "state" in state and "current" in state:
            state = state["state"] or {}  # a pack's checkpoint (packs are not used with test:)
        of = state.get("epoch")
        if of is None and isinstance(state.get("user"), Mapping):  # written before states said their epoch
            of = state["user"].get("epoch")
        kept.append(of)
        watched = (state.get("watcher") or {}).get("best_metric")
        same_run = best_value is None or (watched is not None and math.isclose(watched, best_value, rel_tol=1e-9))
        if of == epoch and same_run:
            return state
    raise TestEvalError(
        f"no checkpoint of epoch {epoch} is kept (found: {sorted(e for e in kept if e is not None) or 'none'}); "
        "a section run with `test:` keeps it, so run the section again"
    )


def checked_metrics(metrics: Any) -> dict[str, float]:
    """The hook's result as plain floats, every name starting with ``test_``."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise TestEvalError(f"evaluate hook returned {type(metrics).__name__}: expected a mapping of test_* metrics")
    out = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.startswith("test_"):
            raise TestEvalError(f"evaluate hook returned a metric named {name!r}: expected names starting with test_")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TestEvalError(f"evaluate hook returned {name}={value!r}: expected a number")
        out[name] = float(value)
    return out
