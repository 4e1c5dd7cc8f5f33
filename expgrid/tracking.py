"""MLflow tracking: study → section → trial nested runs, written from the driver only.

Trials never talk to MLflow: their reports reach the driver through Tune, and one background
thread here turns them into MLflow calls, merging queued per-epoch metrics into few
``log_batch`` calls. So the tracking server only has to be reachable from the driver, trials
do not wait on it, and a slow server does not slow a section down.

Layout in MLflow: one experiment per study (named after it); a study run (artifacts
``summary.json`` and, under ``report/``, the summary and ``trials.parquet``); under it a run per
section (tags ``expgrid.section_id`` / ``expgrid.section_name``; params: the section's fixed
config; metric ``best_<metric>``; artifacts ``best_config.json`` and, under ``report/``, the
section's table and plots); under each section a run per trial (params: its full config,
dotted; metrics per epoch with step = epoch; FAILED when the trial failed). Nesting uses
MLflow's ``mlflow.parentRunId`` tag, which the UI shows as a tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import sqlite3
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from expgrid.config import flatten
from expgrid.study import is_number

PARENT_TAG = "mlflow.parentRunId"
_PARAM_MAX = 6000  # MLflow's limit on a param value's length
_BATCH_MAX = 1000  # MLflow's limit on metrics per log_batch


def default_tracking_uri(results_dir: Path) -> str:
    """A SQLite store beside the results (MLflow 3 refuses new file stores by default)."""
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def preflight(uri: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the URI, when a tracking server does not answer (checked before Ray
    starts, so nothing runs). Opening the store itself happens later, in the background."""
    from expgrid.errors import StudyFailed

    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read()
        except (OSError, ValueError) as e:
            raise StudyFailed(
                f"MLflow tracking server {uri} does not answer ({e}). Start it, or leave out "
                "--tracking-uri / MLFLOW_TRACKING_URI to track into the results folder."
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise StudyFailed(f"MLflow tracking store {uri} cannot be written: {e}") from None


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "expgrid"


def seed_sqlite_store(uri: str, artifact_root: Path | None = None) -> bool:
    """Create a new SQLite store as a copy of an empty one made once per MLflow version.

    MLflow builds a new SQLite store by running its whole chain of schema migrations, which
    takes seconds (3 to 10 s on a 2-CPU machine) — longer than a section of small trials.
    A copy of an empty store made by the same MLflow version is the same database. Returns
    whether the store was seeded (False: not a new local SQLite store)."""
    if not uri.startswith("sqlite:///"):
        return False
    target = Path(uri[len("sqlite:///"):])
    if target.exists():
        return False
    import mlflow
    from mlflow.tracking import MlflowClient

    template = _cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
            fresh = Path(tmp) / "empty.db"
            MlflowClient(f"sqlite:///{fresh}").search_experiments()  # creates the schema
            os.replace(fresh, template)  # atomic: a concurrent run sees no half-made template
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".db.partial")
    shutil.copyfile(template, partial)
    if artifact_root is not None:
        # MLflow's default experiment ("0") points at where the template was made.
        with contextlib.closing(sqlite3.connect(partial)) as db, db:
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (artifact_root.resolve().as_uri(),))  # fmt: skip
    os.replace(partial, target)
    return True


class Tracker:
    """Writes one study's runs. Methods return at once; :meth:`flush` waits for the writes."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.uri = tracking_uri
        self._runs: dict[Any, str] = {}  # (section id, trial index) / section id / "study" → run id
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pending_metrics: dict[str, list[Any]] = {}
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._work, name="expgrid-mlflow", daemon=True)
        self._thread.start()
        # Importing MLflow and opening (or creating) its store takes seconds; it happens on the
        # writer thread while the caller goes on (e.g. starts Ray).
        self._queue.put(lambda: self._open(experiment, artifact_root))

    def _open(self, experiment: str, artifact_root: Path | None) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
        seed_sqlite_store(self.uri, artifact_root)
        self.client = MlflowClient(self.uri)
        existing = self.client.get_experiment_by_name(experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            # A local store keeps artifacts beside the results, not in the current directory.
            location = None
            if artifact_root is not None and not self.uri.startswith(("http://", "https://", "databricks")):
                location = artifact_root.resolve().as_uri()
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    # --- runs -----------------------------------------------------------------------------

    def start_study(self, name: str, params: Mapping[str, Any], run_id: str | None = None) -> None:
        """Create the study run, or reopen ``run_id`` when a study is continued (queued)."""

        def start() -> None:
            if run_id is not None and self._exists(run_id):
                self.client.update_run(run_id, status="RUNNING")
                self._runs["study"] = run_id
            else:
                tags = {"expgrid.kind": "study"}
                self._runs["study"] = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
                self._log_params(self._runs["study"], params)

        self._queue.put(start)

    def study_run_id(self) -> str | None:
        self.flush()
        return self._runs.get("study")

    @property
    def opened(self) -> bool:
        return hasattr(self, "experiment_id")

    def start_section(self, section_id: str, name: str, params: Mapping[str, Any]) -> None:
        """Create the section's run under the study run (queued: trials need not wait for it)."""

        def start() -> None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{section_id} {name}",
                tags={
                    PARENT_TAG: self._runs["study"],
                    "expgrid.kind": "section",
                    "expgrid.section_id": section_id,
                    "expgrid.section_name": name,
                },
            )
            self._runs[section_id] = run.info.run_id
            self._log_params(run.info.run_id, params)

        self._queue.put(start)

    def start_trial(self, section_id: str, index: int, name: str, config: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        def create() -> None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={PARENT_TAG: self._runs[section_id], "expgrid.kind": "trial", "expgrid.section_id": section_id,
                      "expgrid.trial_index": str(index), **tags},
            )  # fmt: skip
            self._runs[(section_id, index)] = run.info.run_id
            self._log_params(run.info.run_id, config)

        self._queue.put(create)

    def log_epoch(self, section_id: str, index: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        step = int(metrics.get("epoch", 0))
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if is_number(v) and k != "epoch"]
        self._queue.put(lambda: self._pending_metrics.setdefault(self._runs[(section_id, index)], []).extend(batch))

    def log_trial_artifacts(self, section_id: str, index: int, files: Mapping[str, Path]) -> None:
        """Upload a trial's artifact files (already written under the results directory)."""
        self._queue.put(lambda: self._log_artifacts(self._runs[(section_id, index)], dict(files)))

    def end_trial(self, section_id: str, index: int, status: str, tags: Mapping[str, str]) -> None:
        def end() -> None:
            from mlflow.entities import RunTag

            run_id = self._runs[(section_id, index)]
            # The run's remaining metrics and its tags in one write, then the status: a trial
            # costs the store four writes in all (a section can end hundreds of trials a minute).
            metrics = self._pending_metrics.pop(run_id, [])
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            for start in range(0, max(1, len(metrics)), _BATCH_MAX):
                self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH_MAX], tags=tag_list if start == 0 else [])
            self.client.set_terminated(run_id, status)

        self._queue.put(end)

    def end_section(
        self, section_id: str, status: str, metrics: Mapping[str, float], artifacts: Mapping[str, Any], tags: Mapping[str, str]
    ) -> None:
        def end() -> None:
            run_id = self._runs[section_id]
            for key, value in metrics.items():
                if is_number(value):
                    self.client.log_metric(run_id, key, float(value))
            for key, value in tags.items():
                self.client.set_tag(run_id, key, value)
            self._log_artifacts(run_id, artifacts)
            self.client.set_terminated(run_id, status)

        # No wait here: the next section starts while the writes drain (end_study waits).
        self._queue.put(end)

    def end_study(self, status: str, artifacts: Mapping[str, Any] | None = None) -> None:
        def end() -> None:
            if "study" not in self._runs:
                return  # the store never opened; the error is in self.errors
            run_id = self._runs["study"]
            self._log_artifacts(run_id, artifacts or {})
            self.client.set_terminated(run_id, status)

        self._queue.put(end)
        self.flush()

    def _log_artifacts(self, run_id: str, artifacts: Mapping[str, Any]) -> None:
        """``artifacts``: the path in the run (``report/table.md``) → a file (Path), text, or
        anything JSON can write. Each artifact is tried on its own: one that fails (and is
        recorded in ``errors``) does not keep the others out of MLflow."""
        for name, content in artifacts.items():
            try:
                if isinstance(content, Path):
                    self._log_file(run_id, name, content)
                else:
                    text = content if isinstance(content, str) else json.dumps(content, indent=2, default=str)
                    self.client.log_text(run_id, text, name)
            except Exception as e:
                self.errors.append(f"artifact {name}: {type(e).__name__}: {e}")

    def _log_file(self, run_id: str, name: str, path: Path) -> None:
        folder, _, file_name = name.rpartition("/")
        if file_name == path.name:
            self.client.log_artifact(run_id, str(path), folder or None)
            return
        with tempfile.TemporaryDirectory() as tmp:  # MLflow names an artifact after its file
            renamed = Path(tmp) / file_name
            shutil.copyfile(path, renamed)
            self.client.log_artifact(run_id, str(renamed), folder or None)

    # --- the writer thread -----------------------------------------------------------------

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
                if self._queue.empty():
                    self._write_metrics()  # idle: write what has gathered
            except Exception as e:  # a tracking hiccup must not end the study; the results stay on disk
                self.errors.append(f"{type(e).__name__}: {e}")
            finally:
                self._queue.task_done()

    def _write_metrics(self) -> None:
        pending, self._pending_metrics = self._pending_metrics, {}
        for run_id, metrics in pending.items():
            for start in range(0, len(metrics), _BATCH_MAX):
                self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH_MAX])

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow allows 100 params per batch
            self.client.log_batch(run_id, params=items[start : start + 100])

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text[:_PARAM_MAX]
