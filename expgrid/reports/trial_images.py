"""Pictures trials leave as artifacts (e.g. classify's ``decision_boundary.png``), shown in the
section report for the section's best and worst trial.

Every ``.png`` artifact of the best trial (the section's, by the study metric at the selected
epoch) is copied into the section's report folder as ``<stem>_best.png``, and the same file of
the worst-scoring trial as ``<stem>_worst.png`` (when the section scored two or more trials).
Failed and diverged trials have no score, so they are never the worst: the worst is the lowest
(``mode: max``) or highest (``mode: min``) score among the trials that have one; ties go to the
earlier trial, as for the best.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from expgrid import records
from expgrid.records import TrialRecord
from expgrid.reports.results import SectionResults, StudyFacts

RANKS = ("best", "worst")


def worst_trial(facts: StudyFacts, section: SectionResults) -> TrialRecord | None:
    scored = [(t.score(facts.metric, facts.mode, section.select), t) for t in section.trials]
    scored = [(s, t) for s, t in scored if s is not None]
    if len(scored) < 2:
        return None
    sign = 1.0 if facts.mode == "max" else -1.0
    return min(scored, key=lambda st: (sign * st[0], st[1].index))[1]


def ranked_trials(facts: StudyFacts, section: SectionResults) -> dict[str, TrialRecord]:
    """``best`` and ``worst`` → the trial, for those the section has."""
    found = {"best": section.best, "worst": worst_trial(facts, section)}
    return {rank: trial for rank, trial in found.items() if trial is not None}


def is_rank_copy(path: Path) -> bool:
    return path.suffix == ".png" and any(path.stem.endswith(f"_{rank}") for rank in RANKS)


def copy_trial_images(facts: StudyFacts, section: SectionResults, results: Path, folder: Path) -> list[Path]:
    """Copy the best and worst trials' PNG artifacts into ``folder``; returns the copies. Copies
    from an earlier report that no longer apply are removed first."""
    for old in folder.glob("*.png"):
        if is_rank_copy(old):
            old.unlink()
    copies = []
    for rank, trial in ranked_trials(facts, section).items():
        for name in trial.artifacts:
            source = records.trial_dir(results, section.id, trial.index) / name
            if not name.endswith(".png") or "/" in name or not source.is_file():
                continue
            target = folder / f"{name[: -len('.png')]}_{rank}.png"
            shutil.copyfile(source, target)
            copies.append(target)
    return copies


def rank_copies(folder: Path) -> list[Path]:
    """The copies in a section's report folder, best before worst, by name."""
    found = [p for p in folder.glob("*.png") if is_rank_copy(p)] if folder.is_dir() else []
    return sorted(found, key=lambda p: (p.stem.rsplit("_", 1)[0], RANKS.index(p.stem.rsplit("_", 1)[1])))
