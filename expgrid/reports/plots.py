"""A section's plots, as the coursework draws them.

- ``curves``: each trial's train and validation loss and metric against the epoch.
- ``value_curve`` (a one-parameter numeric sweep): the train and validation metric at each
  trial's selected epoch against the swept value; a log x-axis when the values span two decades
  or more (symlog when 0 is one of them, so 0 stays on the axis).
- ``heatmap`` (a two-parameter grid): the metric of each cell of the grid.

Each function returns the matplotlib ``Figure`` (or None when the plot does not apply), so
callers and tests can look at its lines before :func:`save` writes a PNG. Figures are drawn with
the Agg canvas, without pyplot: no display, no global state, and matplotlib is imported only
when a plot is drawn (``expgrid validate`` stays light).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expgrid.records import TrialRecord
from expgrid.reports.results import SectionResults, StudyFacts, epoch_rows, number, shown_row
from expgrid.reports.text import assignments, short
from expgrid.study import is_number

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_LEGEND = 12  # more trials than this: a legend would hide the plot
LOG_SPAN = 100.0  # values spanning two decades or more get a log axis


def section_figures(facts: StudyFacts, section: SectionResults) -> dict[str, Figure]:
    """Every plot that applies to the section, by file stem."""
    figures = {"curves": curves_figure(facts, section)}
    for stem, draw in (("value_curve", value_curve_figure), ("heatmap", heatmap_figure)):
        figure = draw(facts, section)
        if figure is not None:
            figures[stem] = figure
    return {stem: f for stem, f in figures.items() if f is not None}


def save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Every figure here lays itself out ("constrained"), so no bbox_inches="tight": that draws
    # the figure a second time to measure it (a fifth of the section report's time).
    figure.savefig(path, dpi=100)
    return path


# ---------------------------------------------------------------------------------------------
# Curves against the epoch


def curves_figure(facts: StudyFacts, section: SectionResults) -> Figure | None:
    """One panel for the losses, one for the study metric (with its train counterpart); in each,
    one line per trial and metric: train dashed, validation solid, one colour per trial."""
    trials = [t for t in sorted(section.trials, key=lambda t: t.index) if t.history]
    reported = _reported(trials)
    panels = [(title, names) for title, names in curve_panels(facts.metric, reported) if names]
    if not panels:
        return None
    figure = _figure(width=6.0 * len(panels), height=4.2)
    colours = _colours(len(trials))
    for position, (title, names) in enumerate(panels, start=1):
        ax = figure.add_subplot(1, len(panels), position)
        for trial, colour in zip(trials, colours):
            rows = epoch_rows(trial)
            epochs = [number(r.get("epoch", i)) for i, r in enumerate(rows, start=1)]
            for name in names:
                # Only the epochs that report it: a metric some epochs leave out (reid's mAP outside
                # its evaluation epochs) is drawn as a line through the others, not as NaN gaps.
                points = [(e, number(r.get(name))) for e, r in zip(epochs, rows) if is_number(r.get(name))]
                ax.plot([e for e, _ in points], [v for _, v in points], color=colour,
                        marker="." if len(points) < len(rows) else None,
                        linestyle="--" if name.startswith("train") else "-", label=f"{trial_label(trial)} · {name}")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(title)
        ax.set_title(f"{title} per epoch")
        ax.grid(alpha=0.3)
        if len(trials) <= MAX_LEGEND:
            ax.legend(fontsize="x-small")
    figure.suptitle(f"Section {section.id} — {section.name}")
    return figure


def curve_panels(metric: str, reported: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(panel title, metrics drawn in it): the losses, then the study metric and its train
    counterpart (``val_accuracy`` → ``train_accuracy``) unless the study metric is a loss."""
    losses = sorted((m for m in reported if "loss" in m), key=lambda m: (not m.startswith("train"), m))
    panels = [("loss", losses)]
    if "loss" not in metric:
        family = metric[len("val_") :] if metric.startswith("val_") else metric  # val_accuracy → accuracy
        panels.append((family, [m for m in dict.fromkeys((train_counterpart(metric), metric)) if m in reported]))
    return panels


def train_counterpart(metric: str) -> str:
    return "train_" + metric[len("val_") :] if metric.startswith("val_") else metric


# ---------------------------------------------------------------------------------------------
# The metric against the swept value


def value_curve_figure(facts: StudyFacts, section: SectionResults) -> Figure | None:
    """For a section sweeping one numeric parameter: the metric (and its train counterpart)
    at each trial's selected epoch against the value."""
    if len(section.swept) != 1:
        return None
    name = section.swept[0]
    trials = sorted(section.trials, key=lambda t: number(t.swept.get(name)))
    values = [t.swept.get(name) for t in trials]
    if not values or not all(is_number(v) for v in values):
        return None
    shown = [shown_row(facts, section, t) or {} for t in trials]
    reported = {k for row in shown for k, v in row.items() if is_number(v)}
    figure = _figure(width=6.0, height=4.2)
    ax = figure.add_subplot(1, 1, 1)
    for metric in dict.fromkeys((train_counterpart(facts.metric), facts.metric)):
        if metric in reported:
            ax.plot(values, [number(row.get(metric)) for row in shown], marker="o",
                    linestyle="--" if metric.startswith("train") else "-", label=metric)  # fmt: skip
    scale, options = value_axis_scale(values)
    ax.set_xscale(scale, **options)
    ax.set_xlabel(name)
    ax.set_ylabel(facts.metric)
    ax.set_title(f"Section {section.id} — {section.name}: {facts.metric} at {section.select.words(facts.metric, facts.mode)}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing plotted when no trial reported the metric
        ax.legend(fontsize="small")
    return figure


def value_axis_scale(values: Sequence[float]) -> tuple[str, dict[str, Any]]:
    """``log`` when the positive values span two decades or more (``symlog`` when 0 is also
    one of them: linear around 0, up to the smallest positive value); else ``linear``."""
    positive = [float(v) for v in values if v > 0]
    if any(v < 0 for v in values) or len(positive) < 2 or max(positive) / min(positive) < LOG_SPAN:
        return "linear", {}
    if any(v == 0 for v in values):
        return "symlog", {"linthresh": min(positive)}
    return "log", {}


# ---------------------------------------------------------------------------------------------
# A two-parameter grid


def heatmap_figure(facts: StudyFacts, section: SectionResults) -> Figure | None:
    """For a section that crosses two parameters (every pair once): the metric per cell, rows
    the first parameter, columns the second; brighter is better in either mode."""
    grid = metric_grid(facts, section)
    if grid is None:
        return None
    rows, columns, cells = grid
    import numpy as np

    first, second = section.swept
    figure = _figure(width=1.2 * len(columns) + 3.0, height=0.7 * len(rows) + 2.2)
    ax = figure.add_subplot(1, 1, 1)
    data = np.ma.masked_invalid(np.array(cells, dtype=float))
    image = ax.imshow(data, cmap="viridis" if facts.mode == "max" else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(columns)), [short(v) for v in columns])
    ax.set_yticks(range(len(rows)), [short(v) for v in rows])
    ax.set_xlabel(second)
    ax.set_ylabel(first)
    for i, line in enumerate(cells):
        for j, value in enumerate(line):
            ax.text(j, i, short(value) if not math.isnan(value) else "–", ha="center", va="center", fontsize="small",
                    bbox={"facecolor": "white", "alpha": 0.6, "linewidth": 0})  # fmt: skip
    figure.colorbar(image, ax=ax, label=facts.metric)
    ax.set_title(f"Section {section.id} — {section.name}: {facts.metric}")
    return figure


def metric_grid(facts: StudyFacts, section: SectionResults) -> tuple[list[Any], list[Any], list[list[float]]] | None:
    """(first parameter's values, second's, metric per cell) when the section crosses exactly two
    parameters and holds each pair once (a zip of two is a diagonal, not a grid: None)."""
    if len(section.swept) != 2 or not section.trials:
        return None
    first, second = section.swept
    rows = _distinct(t.swept.get(first) for t in section.trials)
    columns = _distinct(t.swept.get(second) for t in section.trials)
    cells = {(_key(t.swept.get(first)), _key(t.swept.get(second))): t for t in section.trials}
    if len(cells) != len(section.trials) or len(cells) != len(rows) * len(columns):
        return None
    grid = [
        [number((shown_row(facts, section, cells[_key(a), _key(b)]) or {}).get(facts.metric)) for b in columns]
        for a in rows
    ]
    return rows, columns, grid


# ---------------------------------------------------------------------------------------------


def trial_label(trial: TrialRecord) -> str:
    return assignments(trial.swept) or f"trial {trial.index}"


def _reported(trials: Sequence[TrialRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for trial in trials:
        for row in trial.history:
            seen.update((k, None) for k, v in row.items() if is_number(v) and k != "epoch")
    return list(seen)


def _distinct(values: Any) -> list[Any]:
    out: dict[str, Any] = {}
    for value in values:
        out.setdefault(_key(value), value)
    return list(out.values())


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / max(1, n - 1)) for i in range(n)]
