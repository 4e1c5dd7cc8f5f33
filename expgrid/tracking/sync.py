"""``expgrid sync RESULTS_DIR [--tracking-uri URI]``: make an MLflow store equal to a results directory.

The results directory is the record of a run; MLflow is its mirror. When the tracking server
was unreachable for part of a run, or the results are to be seen in another store, sync brings
the store to exactly what the results hold (:mod:`expgrid.tracking.record`): every study, section
and trial run with its status, params, tags, every metric point (step by step, value by value)
and every artifact. Runs already there are repaired in place: a RUNNING run gets its recorded
status, missing points, params, tags and artifacts are added (an artifact counts as there when
the store lists it at the same size). A run that holds what the record does not — a param of
another value, a metric point the record lacks (an epoch reported again with other values after
a retry or a resume) — cannot be edited through MLflow's API: it is replaced by a new run and
superseded. Superseded runs (ended KILLED, tag ``expgrid.superseded=true``) are those under the
study run that no record stands for any more. Running sync again changes nothing.

Runs are found through the ledger (``<results>/mlflow.json``, per store); the study run is the
one ``study.json`` names (``mlflow_run_id``) when the store has it, else the ledger's, else a new
one — never another study run of the same name. A run the ledger lacks (a driver killed before
it heard of it) is found by its expgrid tags under its parent. The ledger is updated, so a
second sync finds the same runs.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from expgrid import records
from expgrid.errors import ExpgridError, ResultsError
from expgrid.locking import hold
from expgrid.tracking import notes
from expgrid.tracking.batches import log_file, log_run_data
from expgrid.tracking.layout import PARENT_TAG, SUPERSEDED_TAG, point_key
from expgrid.tracking.ledger import Ledger, store_key
from expgrid.tracking.record import RunRecord, study_record
from expgrid.tracking.server import bounded_http_env, is_http, server_answers
from expgrid.tracking.store import experiment_id, live_run, seed_sqlite_store

_PAGE = 1000


class SyncFailed(ExpgridError):
    """The store could not be reached or stopped answering (what was written stays)."""


@dataclasses.dataclass
class SyncCounts:
    created: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # kind → runs
    repaired: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    replaced: int = 0  # runs that could not be repaired: made anew, the old one superseded
    superseded: int = 0  # runs newly marked superseded (ended KILLED where they were RUNNING)
    points: int = 0  # metric points added
    artifacts: int = 0  # artifacts uploaded
    params: int = 0
    tags: int = 0  # tags set (and names or statuses corrected)

    @property
    def nothing(self) -> bool:
        return not (sum(self.created.values()) or sum(self.repaired.values()) or self.replaced or self.superseded
                    or self.points or self.artifacts or self.params or self.tags)  # fmt: skip

    def text(self) -> str:
        c, r = self.created, self.repaired
        return (f"created {c['study']} study, {c['section']} section and {c['trial']} trial runs; "
                f"repaired {r['study']} study, {r['section']} section and {r['trial']} trial runs; "
                f"added {self.points} metric points, {self.params} params, {self.tags} tags and statuses; "
                f"uploaded {self.artifacts} artifacts; replaced {self.replaced} and superseded {self.superseded} runs")  # fmt: skip


def sync(results: Path, tracking_uri: str | None = None) -> tuple[str, SyncCounts]:
    """Make the store at ``tracking_uri`` (default: the one the run used) equal to ``results``.
    Returns the store's URI and what was done. Raises ResultsError (bad results directory),
    ResultsBusy (another command holds it), SyncFailed (the store does not answer)."""
    results = Path(results)
    if not results.is_dir():
        got = "a file" if results.exists() else "no such directory"
        raise ResultsError(str(results), "a results directory of `expgrid run`", got)
    if not (results / "study.json").exists():
        raise ResultsError(str(results), "a results directory of `expgrid run` (with study.json, written when the run "
                           "ends; a run killed before that: `expgrid run … --resume` first)", "no study.json")  # fmt: skip
    with hold(results, "sync"):
        state = records.read_study_state(results)
        if state is None:
            raise ResultsError(str(results), "a results directory of `expgrid run` (with study.json, written when "
                               "the run ends; a run killed before that: `expgrid run … --resume` first)",
                               "no study.json")  # fmt: skip
        if not isinstance(state.get("study"), str):
            raise ResultsError(str(results / "study.json"), "a study name under \"study\"", repr(state.get("study")))
        uri = tracking_uri or state.get("tracking_uri")
        if not isinstance(uri, str) or not uri:
            raise ResultsError(str(results / "study.json"), "the run's tracking URI under \"tracking_uri\" (or give "
                               "--tracking-uri)", repr(uri))  # fmt: skip
        ledger = Ledger.read(results)
        wanted = study_record(results, state, ledger)  # every record file read before the store is touched
        if is_http(uri):
            bounded_http_env(os.environ)  # a server that dies mid-sync costs seconds, not minutes per call
            if not server_answers(uri, timeout=5.0):
                raise SyncFailed(f"MLflow tracking server {uri} does not answer; start it and run `expgrid sync` again")
        from mlflow.exceptions import MlflowException

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        mirror = _Mirror(results, uri, state, ledger)
        try:
            mirror.study(wanted)
        except (MlflowException, OSError) as e:  # OSError: requests' errors too
            raise SyncFailed(f"{uri}: {str(e)[:400]}; what was written stays: run `expgrid sync` again once the "
                             "store answers") from None  # fmt: skip
        finally:
            ledger.save()
        return uri, mirror.counts


class _Mirror:
    def __init__(self, results: Path, uri: str, state: dict[str, Any], ledger: Ledger):
        from mlflow.tracking import MlflowClient

        self.results, self.uri, self.state, self.ledger = results, uri, state, ledger
        seed_sqlite_store(uri)
        self.client = MlflowClient(uri)
        self.counts = SyncCounts()
        self.experiment_id = ""
        self._superseded: set[str] = set()  # this sync's

    # --- the tree ----------------------------------------------------------------------------

    def study(self, wanted: RunRecord) -> None:
        run = None
        own_store = store_key(self.uri) == store_key(str(self.state.get("tracking_uri") or ""))
        for candidate in ([self.state.get("mlflow_run_id")] if own_store else []) + [self.ledger.run_id(self.uri, "study")]:
            run = self._live(candidate)
            if run is not None and run.data.tags.get("expgrid.kind") == "study":
                break
            run = None
        if run is not None:
            self.experiment_id = run.info.experiment_id
        else:
            self.experiment_id = experiment_id(self.client, wanted.name, self.uri, self.results / "mlartifacts")
        self._landing_view()
        run_id = self._mirror(wanted, None, run)
        if own_store and self.state.get("mlflow_run_id") != run_id:
            # So that the next `expgrid run` continues this study run.
            records.write_json(self.results / "study.json", {**self.state, "mlflow_run_id": run_id})

    def _landing_view(self) -> None:
        """The experiment's landing view, as the run set it (:func:`notes.view_state`)."""
        plan = self.ledger.plan("study")
        if plan is None:
            return
        view = notes.view_state(plan["metric"], plan.get("swept") or [])
        if self.client.get_experiment(self.experiment_id).tags.get(notes.VIEW_TAG) != view:
            self.client.set_experiment_tag(self.experiment_id, notes.VIEW_TAG, view)
            self.counts.tags += 1

    def _children(self, wanted: RunRecord, run_id: str) -> None:
        """Mirror ``wanted``'s children under ``run_id``; supersede the other runs under it."""
        stored = self._search(f"tags.`{PARENT_TAG}` = '{run_id}'")
        by_key: dict[Any, list[Any]] = collections.defaultdict(list)
        for run in stored:
            key = _key_of(run)
            if key is not None and SUPERSEDED_TAG not in run.data.tags:
                by_key[key].append(run)
        kept: set[str] = set()
        for child in wanted.children:
            run = self._live(self.ledger.run_id(self.uri, child.key))
            if run is None or _key_of(run) != child.key:
                # Not in the ledger (a driver killed before it heard of the run): the newest run
                # with its tags under this parent.
                candidates = sorted(by_key.get(child.key, []), key=lambda r: r.info.start_time or 0)
                run = candidates[-1] if candidates else None
            kept.add(self._mirror(child, run_id, run))
        for run in stored:
            if run.info.run_id not in kept:
                self._supersede_tree(run)

    def _mirror(self, wanted: RunRecord, parent: str | None, run: Any | None) -> str:
        """Make one run (found, or None) equal to ``wanted``, then its children. Returns its id."""
        if run is not None:
            histories = self._histories(run, wanted)
            if not _repairable(run, wanted, histories):
                self._supersede(run)
                self.counts.replaced += 1
                run = None
        if run is None:
            run_id = self._create(wanted, parent)
        else:
            run_id = run.info.run_id
            if self._repair(run, wanted, parent, histories):
                self.counts.repaired[wanted.kind] += 1
        self.ledger.set_run_ids(self.uri, {wanted.key: run_id})
        if wanted.kind != "trial":
            self._children(wanted, run_id)
        return run_id

    # --- one run ---------------------------------------------------------------------------------

    def _create(self, wanted: RunRecord, parent: str | None) -> str:
        from mlflow.entities import Metric, Param

        tags = {**wanted.tags, "expgrid.synced": "true", **({PARENT_TAG: parent} if parent else {})}
        run_id = self.client.create_run(self.experiment_id, start_time=wanted.start_time, run_name=wanted.name,
                                        tags=tags).info.run_id  # fmt: skip
        when = wanted.end_time or wanted.start_time or int(time.time() * 1000)
        metrics = [Metric(k, v, when, step) for k, points in wanted.metrics.items() for step, v in points]
        log_run_data(self.client, run_id, params=[Param(k, v) for k, v in (wanted.params or {}).items()], metrics=metrics)
        for name, artifact in wanted.artifacts.items():
            self._upload(run_id, name, artifact)
        self.client.set_terminated(run_id, wanted.status, end_time=wanted.end_time)
        self.counts.created[wanted.kind] += 1
        self.counts.points += len(metrics)
        self.counts.params += len(wanted.params or {})
        return run_id

    def _repair(self, run: Any, wanted: RunRecord, parent: str | None, histories: dict[str, list[Any]]) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        run_id = run.info.run_id
        params = [Param(k, v) for k, v in (wanted.params or {}).items() if k not in run.data.params]
        want_tags = {**wanted.tags, **({PARENT_TAG: parent} if parent else {})}
        tags = [RunTag(k, v) for k, v in want_tags.items() if run.data.tags.get(k) != v]
        when = wanted.end_time or int(time.time() * 1000)
        metrics = []
        for name, points in wanted.metrics.items():
            have = collections.Counter(point_key(m.step, m.value) for m in histories.get(name, []))
            for step, value in points:
                if have[point_key(step, value)] > 0:
                    have[point_key(step, value)] -= 1
                else:
                    metrics.append(Metric(name, value, when, step))
        log_run_data(self.client, run_id, params=params, metrics=metrics, tags=tags)
        changes = len(params) + len(tags) + len(metrics)
        if SUPERSEDED_TAG in run.data.tags:
            self.client.delete_tag(run_id, SUPERSEDED_TAG)
            changes += 1
        if wanted.name is not None and run.info.run_name != wanted.name:
            self.client.update_run(run_id, name=wanted.name)
            changes += 1
        stored = self._artifact_sizes(run_id, wanted.artifacts)
        uploads = [(n, a) for n, a in wanted.artifacts.items() if stored.get(n) != a.size]
        for name, artifact in uploads:
            self._upload(run_id, name, artifact)
        if run.info.status != wanted.status:
            self.client.set_terminated(run_id, wanted.status, end_time=wanted.end_time)
            changes += 1
        self.counts.points += len(metrics)
        self.counts.params += len(params)
        self.counts.tags += changes - len(params) - len(metrics)
        return bool(changes or uploads)

    def _upload(self, run_id: str, name: str, artifact: Any) -> None:
        if artifact.path is not None:
            log_file(self.client, run_id, name, artifact.path)
        else:
            self.client.log_text(run_id, artifact.text, name)
        self.counts.artifacts += 1

    def _supersede_tree(self, run: Any) -> None:
        self._supersede(run)
        for child in self._search(f"tags.`{PARENT_TAG}` = '{run.info.run_id}'"):
            self._supersede_tree(child)

    def _supersede(self, run: Any) -> None:
        if run.info.run_id in self._superseded:
            return
        self._superseded.add(run.info.run_id)
        changed = False
        if run.data.tags.get(SUPERSEDED_TAG) != "true":
            self.client.set_tag(run.info.run_id, SUPERSEDED_TAG, "true")
            changed = True
        if run.info.status == "RUNNING":
            self.client.set_terminated(run.info.run_id, "KILLED")
            changed = True
        self.counts.superseded += changed

    # --- reading the store -----------------------------------------------------------------------

    def _live(self, run_id: str | None) -> Any | None:
        return live_run(self.client, run_id, self.experiment_id)

    def _search(self, filter_string: str) -> list[Any]:
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=_PAGE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _histories(self, run: Any, wanted: RunRecord) -> dict[str, list[Any]]:
        names = set(run.data.metrics) | set(wanted.metrics)
        return {name: self.client.get_metric_history(run.info.run_id, name) for name in sorted(names)}

    def _artifact_sizes(self, run_id: str, artifacts: Iterable[str]) -> dict[str, int | None]:
        """Path → size of the run's artifacts in the folders ``artifacts`` are in."""
        sizes: dict[str, int | None] = {}
        for folder in sorted({name.rpartition("/")[0] for name in artifacts}):
            for info in self.client.list_artifacts(run_id, folder or None):
                if not info.is_dir:
                    sizes[info.path] = info.file_size
        return sizes


def _key_of(run: Any) -> Any | None:
    """A stored run's place in the study, by its expgrid tags."""
    tags = run.data.tags
    kind, section = tags.get("expgrid.kind"), tags.get("expgrid.section_id")
    if kind == "section" and section is not None:
        return section
    if kind == "trial" and section is not None and (tags.get("expgrid.trial_index") or "").isdigit():
        return (section, int(tags["expgrid.trial_index"]))
    return None


def _repairable(run: Any, wanted: RunRecord, histories: dict[str, list[Any]]) -> bool:
    """Whether adding to ``run`` can make it ``wanted``: MLflow cannot change a param or remove a
    metric point, so every param it has must have the recorded value and every point must be
    one of the record's."""
    if wanted.params is not None and any(k in wanted.params and wanted.params[k] != v for k, v in run.data.params.items()):
        return False
    for name, stored in histories.items():
        allowed = collections.Counter(point_key(step, value) for step, value in wanted.metrics.get(name, []))
        for metric in stored:
            key = point_key(metric.step, metric.value)
            if allowed[key] <= 0:
                return False
            allowed[key] -= 1
    return True
