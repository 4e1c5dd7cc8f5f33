"""A study's results as a notebook uses them: :class:`Results`, what ``expgrid.run`` returns and
``expgrid.open(results_dir)`` reads back (finished or partial results; nothing runs).

Everything comes from the results directory, through the readers the report is built with
(``expgrid.reports``), so a DataFrame here holds what the report's files hold: ``summary()`` the
rows and columns of ``report/summary.csv``, ``table(section)`` those of the section's
``table.csv``, ``trials()`` those of ``report/trials.parquet``. pandas and matplotlib are imported
by the methods that need them, not by ``import expgrid``.

Figures are drawn as the report draws them (``expgrid.reports.plots``): matplotlib ``Figure``
objects made without pyplot, so the inline backend of a notebook does not show them a second
time at the end of the cell; the Figure a cell ends with is shown once, as its value.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from expgrid import records
from expgrid.errors import ResultsError

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from pandas import DataFrame

    from expgrid.reports import SectionResults

# kind → the plots.py function that draws it (a file stem of the report: curves, value_curve, heatmap)
PLOT_KINDS = {"curves": "curves_figure", "value": "value_curve_figure", "heatmap": "heatmap_figure"}


class ResultsLookupError(ResultsError, ValueError):
    """A section or plot kind these results do not have; one line naming the ones they do."""


class MlflowUI(NamedTuple):
    """How to look at the study in the MLflow UI: the command that serves it, the URL to browse."""

    command: str
    url: str

    def __str__(self) -> str:
        return f"{self.command}   then browse {self.url}"


class Results:
    """A results directory of ``expgrid run`` / ``expgrid.run``, read once when made."""

    def __init__(self, results_dir: str | Path):
        from expgrid.reports import load_results

        self.results_dir = Path(results_dir).resolve()
        self._facts, self._sections = load_results(self.results_dir)  # ResultsError: not a results directory
        self._state = records.read_study_state(self.results_dir) or {}

    # --- what the results are ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._facts.name

    @property
    def metric(self) -> str:
        return self._facts.metric

    @property
    def status(self) -> str:
        """FINISHED, KILLED (interrupted), FAILED, or "unknown" for results of older versions."""
        return str(self._state.get("status") or "unknown")

    @property
    def interrupted(self) -> str | None:
        """What stopped the run before its end, if something did."""
        return self._state.get("interrupted")

    @property
    def tracking_uri(self) -> str | None:
        return self._state.get("tracking_uri")

    @property
    def sections(self) -> list[str]:
        """The ids of the sections with results, in study order."""
        return [s.id for s in self._sections]

    def section(self, section: str | int) -> SectionResults:
        """A section by its id as the study writes it ("1", "3.4e") or its name."""
        wanted = str(section)
        for s in self._sections:
            if s.id == wanted:
                return s
        by_name = [s for s in self._sections if s.name == wanted] or [
            s for s in self._sections if s.name.casefold() == wanted.casefold()]  # fmt: skip
        if len(by_name) == 1:
            return by_name[0]
        known = ", ".join(f"{s.id} ({s.name})" if s.name != s.id else s.id for s in self._sections) or "none"
        raise ResultsLookupError(str(self.results_dir), f"a section these results hold: {known}", repr(section))

    # --- DataFrames ------------------------------------------------------------------------------

    def summary(self) -> DataFrame:
        """The best configuration per section, one row each: report/summary.csv's columns
        (``best`` a dict of the swept values, ``hyperparameters`` a list)."""
        import pandas as pd

        summary = self._summary()
        columns = ["section", "name", "hyperparameters", "best", *summary.metrics, *summary.test_metrics, "trials",
                   "epochs_run", "epochs_full", "saved", "cpu_hours", "gpu_hours", "carried"]  # fmt: skip
        rows = [[r.section, r.name, list(r.hyperparameters), r.best, *(r.metrics.get(m) for m in summary.metrics),
                 *(r.test.get(m) for m in summary.test_metrics), r.trials, r.epochs_run, r.epochs_full, r.saved,
                 r.cpu_hours, r.gpu_hours, [f"{p['section']}/{p['trial']}" for p in r.carried] or None]
                for r in summary.rows]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def table(self, section: str | int) -> DataFrame:
        """One row per trial of the section: the columns of its table.csv."""
        import pandas as pd

        from expgrid.reports.tables import section_table

        table = section_table(self._facts, self.section(section))
        return pd.DataFrame([[row.get(c) for c in table.columns] for row in table.rows], columns=table.columns)

    def trials(self) -> DataFrame:
        """Every trial-epoch of the sections shown, one row each: what report/trials.parquet holds."""
        from expgrid.reports.store import trials_frame

        return trials_frame(self._facts, self._sections)

    def best(self, section: str | int) -> dict[str, Any] | None:
        """The configuration the section chose (its best trial's full config, nested as a trial
        gets it); None when no trial of it completed."""
        import copy

        best = self.section(section).best
        return None if best is None else copy.deepcopy(best.config)

    # --- figures ---------------------------------------------------------------------------------

    def plot(self, section: str | int, kind: str = "curves") -> Figure:
        """The section's plot as the report draws it: ``curves`` (loss and metric per epoch),
        ``value`` (the metric against the one swept value), ``heatmap`` (two crossed parameters)."""
        from expgrid.reports import plots

        found = self.section(section)
        draw = PLOT_KINDS.get(kind) if isinstance(kind, str) else None
        figure = getattr(plots, draw)(self._facts, found) if draw else None
        if figure is None:
            can = [k for k, f in PLOT_KINDS.items() if k != kind and getattr(plots, f)(self._facts, found) is not None]
            raise ResultsLookupError(f"section {found.id}", f"a kind of plot it can draw: {', '.join(can) or 'none'}"
                                     + ("" if kind in PLOT_KINDS else f" (kinds: {', '.join(PLOT_KINDS)})"),
                                     repr(kind))  # fmt: skip
        _figures_show_inline()
        return figure

    # --- MLflow ----------------------------------------------------------------------------------

    def mlflow_ui(self) -> MlflowUI:
        """The command that serves these results' MLflow store in the UI, and the URL of the
        study's runs there (of the experiment, when the store names it)."""
        from expgrid.tracking.ui import ui_command, ui_url

        uri = self.tracking_uri
        if uri is None:
            raise ResultsError(str(self.results_dir), "a study.json naming its MLflow store (tracking_uri)", "none")
        return MlflowUI(ui_command(uri), ui_url(uri, _experiment_id(uri, self.name)))

    # --- display ---------------------------------------------------------------------------------

    def _summary(self) -> Any:
        from expgrid.reports import study_summary

        return study_summary(self._facts, self._sections, self.interrupted)

    def __repr__(self) -> str:
        state = f"interrupted: {self.interrupted}" if self.interrupted else self.status.lower()
        return (f"<expgrid.Results {self.name!r}: {len(self._sections)} sections ({state}), "
                f"{self.results_dir}>\n" + self._summary().to_text())  # fmt: skip

    def _repr_html_(self) -> str:
        """The summary table (as `expgrid run` prints it) for a notebook cell ending in ``results``."""
        summary = self._summary()
        head = "".join(f"<th>{html.escape(h)}</th>" for h in summary.header())
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in summary.cells())
        note = f"<p><b>interrupted:</b> {html.escape(self.interrupted)}</p>" if self.interrupted else ""
        return (f"<div class=\"expgrid-results\"><p><b>{html.escape(self.name)}</b> — best configuration per section "
                f"({html.escape(self.metric)}, {html.escape(self._facts.mode)}); results in "
                f"<code>{html.escape(str(self.results_dir))}</code></p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}</div>")  # fmt: skip


def _experiment_id(uri: str, name: str) -> str | None:
    """The study's experiment id in a local store (SQLite, a directory); None for a server (its
    client retries for minutes when it is down: the URL then opens the experiment list) or when
    MLflow cannot tell."""
    from expgrid.tracking.ui import is_server

    if is_server(uri):
        return None
    try:
        import mlflow

        experiment = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    except Exception:  # noqa: BLE001 - the URL without the id still opens the UI
        return None
    return None if experiment is None else str(experiment.experiment_id)


def _figures_show_inline() -> None:
    """In IPython, let a Figure a cell ends with show as a PNG although pyplot was never imported
    (the inline backend registers its formatters only when pyplot loads it). Formats the user
    chose (e.g. ``%config InlineBackend.figure_formats = ['svg']``) are left as they are."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return
    from matplotlib.figure import Figure

    formatters = shell.display_formatter.formatters
    for mime in ("image/png", "image/svg+xml", "image/jpeg", "application/pdf"):
        try:
            formatters[mime].lookup_by_type(Figure)
            return  # some format is registered already
        except (KeyError, AttributeError):
            continue
    from IPython.core.pylabtools import select_figure_formats

    select_figure_formats(shell, {"png"})
