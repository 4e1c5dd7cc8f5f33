"""What a section starts from: the best swept values of the sections it inherits, and, with
``inherit: {from: …, top: k}``, the k best configurations of the nearest of them.

``inherit: previous`` / ``[ids]`` carry the single best trial's swept values of each inherited
section, in study order (a later section's value wins). With ``top: k`` the *nearest* inherited
section (the last one in study order: the one ``previous`` means in words) is carried as its k
best configurations instead of one; the others still give their single best. The section's
trials are then its own sweep crossed with those k :class:`Parent` configurations, parent-major.

The k are ranked by the study metric as the parent section's ``select`` scores its trials
(ties: the earlier trial), as its best trial is chosen. A parent configuration is the parent
trial's swept values without those the section sets itself (its sweep, ``fixed`` and
``epochs``, which replace them anyway); configurations equal once those are left out count once,
at their best trial, so ``top: 2`` of an optimiser × dropout section crossed with a new dropout
sweep carries the two best *optimisers*. A parent section with fewer such configurations that
scored than k carries the ones it has (:func:`shortfall` says so).

This module imports nothing of Ray or MLflow.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from expgrid.records import TrialRecord
from expgrid.study_types import Section, Selection, Study


@dataclasses.dataclass(frozen=True)
class Parent:
    """One carried configuration: the parent section and trial it comes from, the values it
    carries (dotted name → value) and the trial's score by the study metric."""

    section: str
    trial: int
    values: dict[str, Any]
    score: float | None = None

    @property
    def label(self) -> str:
        """``1/3``: section 1, trial 3 (as MLflow's trial runs are named)."""
        return f"{self.section}/{self.trial}"

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "trial": self.trial, "values": dict(self.values), "score": self.score}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Parent:
        return cls(str(data["section"]), int(data["trial"]), dict(data.get("values") or {}), data.get("score"))


class Finished(Protocol):
    """A finished section as the carry needs it (``outcomes.SectionOutcome`` is one)."""

    section: Section
    trials: list[TrialRecord]
    best: TrialRecord | None


def inherited_from(study: Study, section: Section) -> list[str]:
    """Ids of the earlier sections ``section`` starts from, in study order."""
    earlier = [s.id for s in study.sections[: study.sections.index(section)]]
    if section.inherit == "none":
        return []
    if section.inherit == "previous":
        return earlier
    return [sid for sid in earlier if sid in section.inherit]


def top_parent_of(study: Study, section: Section) -> str | None:
    """The section whose k best configurations ``section`` carries (``top``), else None."""
    if section.top is None:
        return None
    inherited = inherited_from(study, section)
    return inherited[-1] if inherited else None


def carry(study: Study, section: Section, finished: Mapping[str, Finished]) -> tuple[dict[str, Any], list[Parent]]:
    """(the single-best values the section's base config gets, the parents its trials cross
    with: [] without ``top``). Raises KeyError naming an inherited section that has not finished."""
    parent_id = top_parent_of(study, section)
    values: dict[str, Any] = {}
    for sid in inherited_from(study, section):
        if sid not in finished:
            raise KeyError(sid)
        if sid != parent_id:
            best = finished[sid].best
            values.update(best.swept if best is not None else {})
    if parent_id is None:
        return values, []
    parent = finished[parent_id]
    return values, top_configurations(study, section, parent.section, parent.trials)


def top_configurations(study: Study, section: Section, parent: Section, trials: Sequence[TrialRecord]) -> list[Parent]:
    """The ``section.top`` best distinct configurations among the parent section's trials."""
    own = own_names(section)
    chosen: list[Parent] = []
    seen: set[str] = set()
    for trial, score in ranked(trials, study.metric, study.mode, parent.select):
        values = {k: v for k, v in trial.swept.items() if not _covered(k, own)}
        key = json.dumps(values, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        chosen.append(Parent(parent.id, trial.index, values, score))
        if len(chosen) == section.top:
            break
    return chosen


def ranked(trials: Sequence[TrialRecord], metric: str, mode: str, select: Selection) -> list[tuple[TrialRecord, float]]:
    """Scored trials, best first (ties: the earlier trial), as ``records.best_trial`` picks the best."""
    scored = [(t, s) for t in trials if (s := t.score(metric, mode, select)) is not None]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(scored, key=lambda ts: (sign * ts[1], ts[0].index))


def own_names(section: Section) -> tuple[str, ...]:
    """The parameters the section sets itself, whatever it carries: its sweep, fixed, epochs."""
    return (*section.swept, *section.fixed, *(("epochs",) if section.epochs is not None else ()))


def _covered(name: str, own: Sequence[str]) -> bool:
    return any(name == o or name.startswith(o + ".") for o in own)


def shortfall(section: Section, parents: Sequence[Parent]) -> str | None:
    """A warning when the parent section gave fewer distinct scored configurations than ``top``."""
    if section.top is None or len(parents) >= section.top:
        return None
    parent = parents[0].section if parents else "?"
    return (f"section {section.id} carries the {section.top} best configurations of section {parent}, which has only "
            f"{len(parents)} distinct scored one{'s' if len(parents) != 1 else ''}: its trials start from "
            f"{', '.join(p.label for p in parents) or 'none'}")  # fmt: skip


def describe_parents(parents: Sequence[Parent]) -> str:
    """``1/3 (optimizer.name=adam), 1/5 (optimizer.name=rmsprop)``."""
    from expgrid.wording import short

    return ", ".join(f"{p.label} (" + ", ".join(f"{k}={short(v)}" for k, v in p.values.items()) + ")" for p in parents)
