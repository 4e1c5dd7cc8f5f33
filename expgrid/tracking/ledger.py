"""``<results>/mlflow.json``: which MLflow run holds each study, section and trial, per store.

The results directory is the record of a run, MLflow its mirror; this ledger ties the two. It
keeps, for every tracking URI the results were written to (by ``expgrid run``) or synced into
(by ``expgrid sync``), the run id of the study, of each section and of each trial, plus the
study run's params (``study.json`` does not hold them all) and the plans the study and section
runs' descriptions state (what each section sweeps and inherits). So:

- a continued or resumed run reopens the runs it had, instead of starting new ones;
- ``expgrid sync`` repairs exactly those runs, never "the newest run of that name";
- a run that no longer stands for any record (a trial rerun from its first epoch) is
  *superseded*: ended KILLED with the tag ``expgrid.superseded=true``.

The driver writes it (from the writer process's replies) and ``sync`` does; both hold the
results directory's lock, so there is one writer at a time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from expgrid import durable, records

FILE_NAME = "mlflow.json"
_ABOUT = ("MLflow run ids of this results directory's study, sections and trials, per tracking URI "
          "(written by `expgrid run` and `expgrid sync`; delete it to have sync match runs by their tags)")  # fmt: skip

# A run's place in a study: "study", a section id (str), or (section id, trial index).
RunKey = Any


def store_key(uri: str) -> str:
    """One spelling per store: a server URL with or without its trailing slash is the same."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else uri


class Ledger:
    """The ledger of one results directory (thread-safe: the driver's reply reader updates it)."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self._data = data
        self._lock = threading.Lock()

    @classmethod
    def read(cls, results: Path) -> Ledger:
        """The ledger of ``results`` (empty when it has none). Raises :class:`ResultsError` for a
        file that is not one: it is never silently replaced."""
        path = Path(results) / FILE_NAME
        expected = 'the MLflow run-id ledger expgrid writes (JSON with "stores")'
        fix = "delete the file to have `expgrid sync` match runs by their tags"
        data = durable.read_json(path, expected, fix)
        if data is None:
            return cls(path, {"about": _ABOUT, "study_params": None, "stores": {}})
        if not _well_formed(data):
            raise durable.RecordError(path, expected, f"{str(data)[:40]!r}", fix)
        return cls(path, data)

    def _store(self, uri: str) -> dict[str, Any]:
        return self._data["stores"].setdefault(store_key(uri), {"study": None, "sections": {}, "trials": {}})

    def run_id(self, uri: str, key: RunKey) -> str | None:
        with self._lock:
            store = self._data["stores"].get(store_key(uri))
            if store is None:
                return None
            if key == "study":
                return store.get("study")
            if isinstance(key, str):
                return store["sections"].get(key)
            section_id, index = key
            return store["trials"].get(section_id, {}).get(str(index))

    def set_run_ids(self, uri: str, ids: dict[RunKey, str]) -> None:
        with self._lock:
            store = self._store(uri)
            for key, run_id in ids.items():
                if key == "study":
                    store["study"] = run_id
                elif isinstance(key, str):
                    store["sections"][key] = run_id
                else:
                    section_id, index = key
                    store["trials"].setdefault(section_id, {})[str(index)] = run_id

    def run_ids(self, uri: str) -> set[str]:
        """Every run id recorded for ``uri``."""
        with self._lock:
            store = self._data["stores"].get(store_key(uri)) or {"sections": {}, "trials": {}}
            ids = {store.get("study"), *store["sections"].values()}
            ids.update(i for trials in store["trials"].values() for i in trials.values())
            return {i for i in ids if i}

    @property
    def study_params(self) -> dict[str, Any] | None:
        return self._data.get("study_params")

    def set_study_params(self, params: dict[str, Any]) -> None:
        with self._lock:
            self._data["study_params"] = params

    def plan(self, key: str) -> dict[str, Any] | None:
        """What the study (``"study"``) or a section (its id) was to do, as
        :mod:`expgrid.tracking.notes` describes it; None when not recorded (an older expgrid)."""
        with self._lock:
            return (self._data.get("plans") or {}).get(key)

    def set_plan(self, key: str, plan: dict[str, Any]) -> None:
        with self._lock:
            self._data.setdefault("plans", {})[key] = plan

    def save(self) -> None:
        with self._lock:
            records.write_json(self.path, self._data)


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("stores"), dict):
        return False
    for store in data["stores"].values():
        if not (isinstance(store, dict) and isinstance(store.get("sections"), dict)
                and isinstance(store.get("trials"), dict)
                and all(isinstance(t, dict) for t in store["trials"].values())):  # fmt: skip
            return False
    return True
