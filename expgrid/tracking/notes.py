"""What the study and section runs say in MLflow's UI: their descriptions, a section's best
configuration as params, the study's result as a metric, and the runs table's landing view.

MLflow shows a run's ``mlflow.note.content`` tag as its description (the run page, and the
runs table's Description column, which shows its start: so the first line is a summary).

- A section run's description: what it sweeps (names, values), what it inherits, and once it
  ends its best value and configuration. Its params are its base configuration at its start and,
  at its end, the swept names with the best trial's values: together the best configuration, in
  the same columns as its trials' params. Its best value is the metric ``best_<metric>``, not
  ``<metric>``: a trial run's ``<metric>`` column shows its last epoch, the section's is a
  selected value (possibly another epoch's), so one column holding both would compare unlike
  things.
- The study run's description: trainable, metric, each section's sweep, and at its end the best
  per section (its first line lists them). Once the study has finished, ``best_<metric>`` holds
  its final value (the last section's best).
- The experiment's shared view (the experiment tag ``mlflow.sharedViewState.expgrid``, what the
  UI's "share view" writes and ``?viewStateShareKey=expgrid`` opens): the runs sorted by name,
  so that each section run is followed by its trials, all rows shown (a list sorted by time nests
  child runs under their collapsed parent), with the columns ``best_<metric>``, ``<metric>``, the
  swept params and Description, in that order.

The plans (what the study and its sections are to do) are made by the runner from the study and
kept in the ledger (``mlflow.json``); the results are read from ``section.json`` and the study's
summary. The writer process and ``expgrid sync`` both build the runs' content with these
functions from the same inputs, so a run either wrote needs nothing from the other. Imports no
MLflow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from expgrid.carry import inherited_from
from expgrid.config import flatten
from expgrid.study import is_number
from expgrid.study_types import Section, Selection, Study
from expgrid.tracking.layout import params_of

NOTE_TAG = "mlflow.note.content"  # MLflow's run description
VIEW_KEY = "expgrid"  # the share key of the experiment's landing view
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_VALUES_SHOWN = 8  # swept values listed per name; more are counted


# --- plans (made from the study by the runner, kept in the ledger) ------------------------------


def study_plan(study: Study) -> dict[str, Any]:
    """What the study run's description says before any result (JSON-able)."""
    return {
        "name": study.name, "trainable": study.trainable, "metric": study.metric, "mode": study.mode,
        "description": study.description,
        "sections": [{"id": s.id, "name": s.name, "sweeps": _sweep_of_section(s), "inherits": _inherits(study, s)}
                     for s in study.sections],
        "swept": list(dict.fromkeys(name for s in study.sections for name in s.swept)),
    }  # fmt: skip


def section_plan(study: Study, section: Section, swept: Sequence[str], points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a section run's description says before its result; ``points``: each trial's swept
    values (the values actually tried, sampled ones included)."""
    values = {name: list(dict.fromkeys(_short(p[name]) for p in points if name in p)) for name in swept}
    return {"id": section.id, "name": section.name, "trials": len(points), "sweeps": _sweep_text(values),
            "inherits": _inherits(study, section), "description": section.description}  # fmt: skip


def _sweep_of_section(section: Section) -> str:
    values = {k: list(dict.fromkeys(_short(v) for v in vs)) for k, vs in (*section.grid, *section.zip)}
    for name, sampled in section.sample:
        drawn = ", ".join(_short(a) for a in sampled.args)
        values[name] = [f"{sampled.kind}({drawn}), {section.num_samples} samples"]
    return _sweep_text(values)


def _sweep_text(values: Mapping[str, Sequence[str]]) -> str:
    if not values:
        return "nothing (one trial)"
    parts = []
    for name, shown in values.items():
        more = f", … ({len(shown)} values)" if len(shown) > _VALUES_SHOWN else ""
        parts.append(f"{name} over {', '.join(shown[:_VALUES_SHOWN])}{more}")
    return "; ".join(parts)


def _inherits(study: Study, section: Section) -> str:
    ids = inherited_from(study, section)
    if not ids:
        return "nothing (the study's defaults)"
    named = f"section {ids[0]}" if len(ids) == 1 else f"sections {', '.join(ids)}"
    if section.top is not None:
        return f"the best of {named}, crossing its sweep with the {section.top} best configurations of section {ids[-1]}"
    return f"the best of {named}"


# --- a section run -------------------------------------------------------------------------------


def section_note(plan: Mapping[str, Any] | None, saved: Mapping[str, Any] | None, study: str | None = None) -> str:
    """A section run's description: its plan, and its result when ``saved`` (its
    ``section.json``) is there. Either may be missing (results of an older expgrid)."""
    plan = plan or {}
    source = saved or plan
    title = f"Section {source.get('id', '?')} · {source.get('name', '')}".rstrip(" ·")
    sweeps = plan.get("sweeps") or (", ".join(saved.get("swept") or []) if saved else "") or "?"
    lines = []
    result = _section_result(saved)
    if result is not None:
        head, detail = result
        lines += [f"{head} — sweeps {sweeps}", ""]
    else:
        detail = []
        lines += [f"sweeps {sweeps}", ""]
    lines.append(f"**{title}**" + (f" of study {study}" if study else ""))
    lines.append("")
    if plan.get("description"):
        lines += [str(plan["description"]).strip(), ""]
    trials = f" ({plan['trials']} trials)" if plan.get("trials") else ""
    lines.append(f"- Sweeps: {sweeps}{trials}")
    if plan.get("inherits"):
        lines.append(f"- Inherits: {plan['inherits']}")
    lines += detail
    return "\n".join(lines)


def _section_result(saved: Mapping[str, Any] | None) -> tuple[str, list[str]] | None:
    if not saved:
        return None
    best = saved.get("best")
    metric, mode = str(saved.get("metric", "metric")), str(saved.get("mode", ""))
    if not best:
        return f"no trial completed with a finite {metric}", ["- Best: none"]
    value = (best.get("metrics") or {}).get(metric)
    chosen = _assignments(best.get("swept") or {}) or "its one configuration"
    head = f"best {metric} = {_number(value)} at {chosen}"
    by = Selection.of(saved.get("select", "last_epoch")).words(metric, mode)
    detail = [f"- Best: {metric} = {_number(value)} ({mode}, at {by} of trial {best.get('index')})",
              f"- Best configuration: {chosen} (the run's params hold the whole configuration)"]  # fmt: skip
    carried = saved.get("carried")
    if carried:
        detail.append("- Carried: " + ", ".join(f"{p.get('section')}/{p.get('trial')}" for p in carried))
    return head, detail


def section_best_params(saved: Mapping[str, Any] | None) -> dict[str, str]:
    """The swept names with the best trial's values, as params (the run's other params, its base
    configuration, were logged at its start)."""
    best = (saved or {}).get("best")
    if not best:
        return {}
    swept = set(saved.get("swept") or best.get("swept") or ())  # type: ignore[union-attr]
    return {k: v for k, v in params_of(best.get("config") or {}).items() if k in swept}


# --- the study run -------------------------------------------------------------------------------


def study_note(plan: Mapping[str, Any] | None, rows: Sequence[Mapping[str, Any]] | None, metric: str) -> str:
    """The study run's description: its plan, and the best per section from the summary's
    ``rows`` (``StudySummary.to_json()``) once it has them."""
    plan = plan or {}
    name = plan.get("name", "")
    lines = []
    if rows:
        lines.append(" · ".join(f"{r['section']} {r['name']}: {_number((r.get('metrics') or {}).get(metric))}"
                                for r in rows) + f" ({metric}, best per section)")  # fmt: skip
    else:
        lines.append(f"{len(plan.get('sections') or [])} sections, {metric} ({plan.get('mode', '')})")
    lines += ["", f"**Study {name}**", ""]
    if plan.get("description"):
        lines += [str(plan["description"]).strip(), ""]
    if plan.get("trainable"):
        lines.append(f"- Trainable: {plan['trainable']}")
    lines.append(f"- Metric: {metric} ({plan.get('mode', '')})")
    if plan.get("sections"):
        lines.append("- Sections:")
        for s in plan["sections"]:
            lines.append(f"  - {s['id']} {s['name']}: sweeps {s['sweeps']}; inherits {s['inherits']}")
    if rows:
        lines += ["", f"| section | best configuration | {metric} |", "|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['section']} {r['name']} | {_assignments(r.get('best') or {}) or '–'} | "
                         f"{_number((r.get('metrics') or {}).get(metric))} |")  # fmt: skip
    return "\n".join(lines)


def study_metrics(rows: Sequence[Mapping[str, Any]] | None, metric: str, finished: bool) -> dict[str, float]:
    """``best_<metric>``: the last section's best, once the study has finished (a stopped one's
    would change when it is resumed, and MLflow keeps every value ever logged)."""
    if not finished or not rows:
        return {}
    value = (rows[-1].get("metrics") or {}).get(metric)
    return {f"best_{metric}": float(value)} if is_number(value) else {}


# --- the experiment's landing view -------------------------------------------------------------


def view_state(metric: str, swept: Sequence[str]) -> str:
    """The runs table the printed URL opens (see the module's docstring): the experiment page's
    search facets and UI state, as MLflow's "share view" stores them."""
    values = [f"metrics.`best_{metric}`", f"metrics.`{metric}`", *(f"params.`{name}`" for name in swept)]
    columns = ["attributes.`Description`", *values]
    # The result columns first, then the (wide) description, then MLflow's own Created and
    # Duration (their column ids): on a laptop's screen the landing shows the values.
    order = ["attributes.`Run Name`", *values, "attributes.`Description`", "runDateAndNestInfo", "duration"]
    state = {
        "searchFilter": "", "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True, "startTime": "ALL",
        "lifecycleFilter": "Active", "modelVersionFilter": "All Runs", "datasetsFilter": [],
        "selectedColumns": columns, "columnOrder": order, "columnWidths": {"attributes.`Description`": 360},
        "runsExpanded": {}, "runsPinned": [], "runsHidden": [], "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False, "runListHidden": False,
        "isAccordionReordered": False, "useGroupedValuesInCharts": True, "hideEmptyCharts": True,
        "groupBy": None, "groupsExpanded": {}, "autoRefreshEnabled": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }  # fmt: skip
    return json.dumps(state, sort_keys=True)


# --- text ----------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A value as a study file writes it (numbers short, the rest as JSON)."""
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _assignments(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in flatten(dict(values)).items())


def _number(value: Any) -> str:
    if not is_number(value):
        return "–"
    value = float(value)
    return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4g}"
