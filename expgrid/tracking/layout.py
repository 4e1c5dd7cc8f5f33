"""How a study is laid out in MLflow: run names, the tags that place a run, a config as params,
an epoch report as metric points, a non-file artifact as text.

One experiment per study (named after it); a study run; under it a run per section (tags
``expgrid.section_id`` / ``expgrid.section_name``); under each section a run per trial (params:
its full config, dotted; metrics per epoch with step = epoch). Nesting uses MLflow's
``mlflow.parentRunId`` tag, which the UI shows as a tree. The writer process and ``expgrid
sync`` both name and fill runs through these, so a run either wrote needs nothing from the
other. Imports no MLflow.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any

from expgrid.config import flatten
from expgrid.study import is_number

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for nested runs
SUPERSEDED_TAG = "expgrid.superseded"  # a run no record stands for any more (see ledger.py)
PARAM_MAX = 6000  # MLflow's limit on a param value's length


def trial_run_name(section_id: str, index: int, swept: Mapping[str, Any]) -> str:
    """A trial run's name: ``<section>/<index> <swept values>`` (what the UI lists)."""

    def short(value: Any) -> str:
        return f"{value:g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, list) else str(value)

    return (f"{section_id}/{index} " + " ".join(f"{k}={short(v)}" for k, v in swept.items())).rstrip()[:250]


def parent_tags(parent: Mapping[str, Any] | None) -> dict[str, str]:
    """A trial of a ``top`` carry: the parent configuration it started from (``expgrid.parent``:
    ``<section>/<trial>``, ``expgrid.parent_values``: the carried values as JSON)."""
    if not parent:
        return {}
    return {"expgrid.parent": f"{parent['section']}/{parent['trial']}",
            "expgrid.parent_values": json.dumps(parent.get("values") or {}, default=str)[:5000]}  # fmt: skip


def carried_tags(carried: list[Mapping[str, Any]] | None) -> dict[str, str]:
    """A section of a ``top`` carry: the parents its trials crossed with (``expgrid.carried``)."""
    if not carried:
        return {}
    return {"expgrid.carried": ", ".join(f"{p['section']}/{p['trial']}" for p in carried)[:5000]}


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    """A config as MLflow params: dotted names, values as text (JSON for lists, maps, bools)."""
    return {k: _param_text(v) for k, v in flatten(config).items()}


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:PARAM_MAX]


def epoch_points(row: Mapping[str, Any]) -> tuple[int, list[tuple[str, float]]]:
    """One epoch report as MLflow metric points: its step (the epoch) and (name, value) pairs
    of its numbers (strings such as a stop reason are not metrics)."""
    step = int(row.get("epoch", 0))
    return step, [(k, float(v)) for k, v in row.items() if is_number(v) and k != "epoch"]


def stored_value(value: float) -> float:
    """A metric value as MLflow returns it: its stores keep ±inf as ±the largest float."""
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value


def point_key(step: int, value: float) -> tuple[int, Any]:
    """A comparable (step, value) with every NaN equal to every other."""
    value = stored_value(float(value))
    return step, ("nan" if math.isnan(value) else value)


def artifact_text(content: Any) -> str:
    """How a non-file artifact is written: text as it is, anything else as indented JSON."""
    return content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
