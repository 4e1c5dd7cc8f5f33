"""Reports: the tables, plots and summary a study delivers, as files and MLflow artifacts.

Files (all rebuilt by ``expgrid report RESULTS_DIR`` from the stored results)::

    <results>/sections/<id>/report/table.md, table.csv     one row per trial   (tables)
    <results>/sections/<id>/report/curves.png              loss/metric per epoch (plots)
    <results>/sections/<id>/report/value_curve.png         one numeric parameter swept
    <results>/sections/<id>/report/heatmap.png             two parameters crossed
    <results>/sections/<id>/report/<stem>_best.png, _worst.png   the best / worst trial's PNG
                                                           artifacts, e.g. decision_boundary (trial_images)
    <results>/report/summary.txt, summary.md, summary.csv  best configuration per section (summary)
    <results>/report/report.md                             the summary, every table and plot
    <results>/report/trials.parquet                        every trial-epoch, for pandas (store)

The runner writes a section's files when the section ends and the study's at the study's end;
both go through the readers in :mod:`expgrid.reports.results`, so the run's report and a
rebuilt one are the same. pandas and matplotlib are imported only when a report is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from expgrid import records
from expgrid.reports.results import SectionResults, StudyFacts, load_results, load_section, section_facts
from expgrid.reports.summary import StudySummary, study_summary


def preload_in_background() -> None:
    """Import the plotting and Parquet libraries (about a second and a half) on a daemon thread,
    so the first section's report does not pay for it: the driver mostly waits on Ray meanwhile."""
    import threading

    def load() -> None:
        try:
            import matplotlib.backends.backend_agg  # noqa: F401
            import matplotlib.figure  # noqa: F401
            import pandas  # noqa: F401
            import pyarrow.parquet  # noqa: F401
        except ImportError:  # the report says so itself, when it runs
            pass

    threading.Thread(target=load, name="expgrid-report-imports", daemon=True).start()

__all__ = [
    "Report",
    "SectionResults",
    "StudyFacts",
    "StudySummary",
    "load_section",
    "rebuild",
    "section_facts",
    "section_report_dir",
    "study_report_dir",
    "write_section_report",
    "write_study_report",
]

SECTION_FILES = ("table.md", "table.csv", "curves.png", "value_curve.png", "heatmap.png")


@dataclasses.dataclass(frozen=True)
class Report:
    summary: StudySummary
    files: list[Path]


def section_report_dir(results: Path, section_id: str) -> Path:
    return records.section_dir(results, section_id) / "report"


def study_report_dir(results: Path) -> Path:
    return results / "report"


def write_section_report(facts: StudyFacts, section: SectionResults, results: Path) -> list[Path]:
    """The section's table (Markdown, CSV) and plots; returns the files written."""
    from expgrid.reports import plots
    from expgrid.reports.tables import section_table
    from expgrid.reports.trial_images import copy_trial_images

    folder = section_report_dir(results, section.id)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SECTION_FILES:  # a plot that no longer applies (the section changed) must go
        (folder / name).unlink(missing_ok=True)
    table = section_table(facts, section)
    files = [_write(folder / "table.md", table.to_markdown()), _write(folder / "table.csv", table.to_csv())]
    for stem, figure in plots.section_figures(facts, section).items():
        files.append(plots.save(figure, folder / f"{stem}.png"))
    files += copy_trial_images(facts, section, results, folder)
    return files


def write_study_report(facts: StudyFacts, sections: Sequence[SectionResults], results: Path,
                       interrupted: str | None = None) -> Report:  # fmt: skip
    """The summary (text, Markdown, CSV), report.md and trials.parquet; ``interrupted``: what
    stopped the run before its end, if something did."""
    from expgrid.reports import store

    summary = study_summary(facts, sections, interrupted)
    folder = study_report_dir(results)
    folder.mkdir(parents=True, exist_ok=True)
    files = [
        _write(folder / "summary.txt", summary.to_text()),
        _write(folder / "summary.md", summary.to_markdown()),
        _write(folder / "summary.csv", summary.to_csv()),
        _write(folder / "report.md", _report_markdown(facts, summary, sections, results)),
        store.write_trials(folder / store.FILE_NAME, facts, sections),
    ]
    return Report(summary, files)


def rebuild(results: Path) -> Report:
    """Every table, plot and summary again, from a results directory alone (nothing is rerun).

    Raises :class:`expgrid.errors.ResultsError` when ``results`` is not a results directory."""
    from expgrid.locking import LOCK_FILE, hold

    results = Path(results)
    if not (results / LOCK_FILE).exists():
        load_results(results)  # says why this is no results directory, before a lock file is made in it
    with hold(results, "report", shared=True):  # never while a run or a sync writes to it
        facts, sections = load_results(results)
        files = [path for section in sections for path in write_section_report(facts, section, results)]
        state = records.read_study_state(results) or {}
        report = write_study_report(facts, sections, results, state.get("interrupted"))
    return Report(report.summary, files + report.files)


def _report_markdown(facts: StudyFacts, summary: StudySummary, sections: Sequence[SectionResults], results: Path) -> str:
    from expgrid.reports.tables import section_table
    from expgrid.reports.trial_images import rank_copies

    parts = [f"# {facts.name}\n", summary.to_markdown()]
    for section in sections:
        parts.append(section_table(facts, section).to_markdown())
        folder = section_report_dir(results, section.id)
        for name in SECTION_FILES:
            if name.endswith(".png") and (folder / name).exists():
                parts.append(f"![{name[:-4]}](../sections/{section.id}/report/{name})\n")
        for path in rank_copies(folder):
            parts.append(f"![{path.stem}](../sections/{section.id}/report/{path.name})\n")
    return "\n".join(parts)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
