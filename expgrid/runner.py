"""Runs a study: its sections in order, each as one Ray Tune experiment, tracked in MLflow.

For each section: plan its trials (``planning``), skip it when ``<results>/sections/<id>``
already holds a finished run of the very same trials, otherwise run them through the Ray
adapter, record every trial (``records``), pick the best by the study metric, and carry its
swept values into the sections that inherit. Ray is started only when some section has work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from expgrid import admission, carry, datacheck, durable, interrupts, planning, records, reports, test_eval, tracking
from expgrid.config import flatten
from expgrid.errors import ConfigError, StudyFailed, StudyFileError
from expgrid.interrupts import Interrupted
from expgrid.locking import hold
from expgrid.logfiles import log_artifacts, notebook_logs_to, open_section_log, tune_logs_to
from expgrid.outcomes import SectionOutcome, StudyOutcome
from expgrid.progress import section_progress
from expgrid.records import FAILED, INTERRUPTED, RUNNING, TrialRecord
from expgrid.run_options import RunOptions
from expgrid.section_events import SectionEvents
from expgrid.stopping import MLFLOW_STATUS, section_mlflow_status
from expgrid.study import load_study
from expgrid.study_types import Resources, Section, Study
from expgrid.tracking import Tracker, default_tracking_uri
from expgrid.tracking import notes as tracking_notes
from expgrid.trainable_lookup import resolve_trainable
from expgrid.trainable_spec import TrainableSpec, data_key_of, ships_by_value
from expgrid.wording import describe as _describe


def prepare(path: str | Path, overrides: dict[str, Any] | None = None, smoke: bool = False,
            check_data: bool = True) -> tuple[Study, TrainableSpec]:  # fmt: skip
    """Load and fully check a study (no Ray). Raises StudyFileError. ``smoke``: plan the tiny
    version of every section (see ``Study.smoke``). ``check_data``: also check the data files
    the trials name (``expgrid.datacheck``); `expgrid show` leaves them out."""
    return prepare_loaded(load_study(path, overrides), smoke=smoke, check_data=check_data)


def prepare_loaded(study: Study, spec: TrainableSpec | None = None, smoke: bool = False,
                   check_data: bool = True) -> tuple[Study, TrainableSpec]:  # fmt: skip
    """:func:`prepare` of a study already read (from a file, or a mapping: ``expgrid.run``);
    ``spec``: its trainable when the study gave the function itself (else looked up by name)."""
    if spec is None:
        try:
            spec = resolve_trainable(study.trainable)
        except ConfigError as e:
            raise StudyFileError(study.path, e) from None
    if smoke:
        if spec.smoke is None:
            raise StudyFileError(study.path, ConfigError("trainable", "a trainable with smoke settings for --smoke", study.trainable))
        # One CPU per process, no GPU: a smoke run checks the study on any machine (CI included).
        sections = tuple(dataclasses.replace(sec, resources=None) for sec in study.sections)
        study = dataclasses.replace(study, smoke=True, resources=Resources(cpu=1.0, gpu=0.0), sections=sections)
    planning.check_study(study, spec)
    if check_data:
        datacheck.check_study_data(study, spec)
    test_eval.check_study(study, spec, check_data)
    return study, spec


def run_study(study: Study, spec: TrainableSpec, options: RunOptions | None = None) -> StudyOutcome:
    """Run the study's sections in order, holding the results directory's lock throughout.

    Raises :class:`Interrupted` when Ctrl-C or SIGTERM stopped it (after recording everything),
    :class:`StudyFailed` when a section leaves nothing to carry forward, and
    :class:`expgrid.locking.ResultsBusy` when another command holds the results directory."""
    options = options or RunOptions()
    results = Path(options.results_dir or Path("results") / study.name).resolve()
    wanted = _selected_sections(study, options.sections)
    results.mkdir(parents=True, exist_ok=True)
    with (hold(results, "run"), interrupts.catching() as stop, tune_logs_to(results / "ray.log"),
          notebook_logs_to(results / "ray.log")):  # fmt: skip
        stop.resume_hint = "`expgrid run` with --resume"
        return _run_sections(study, spec, options, results, wanted, stop)


def _run_sections(study: Study, spec: TrainableSpec, options: RunOptions, results: Path, wanted: set[str],
                  stop: interrupts.StopRequest) -> StudyOutcome:  # fmt: skip
    out = options.stream or sys.stdout
    uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(results)
    state = records.read_study_state(results) or {}
    for section in study.sections:  # a damaged record stops the run before anything starts
        if records.read_section(results, section.id) is not None:
            records.read_trials(results, section.id)

    tracking.preflight(uri)  # an unreachable server stops the study here, before anything runs
    tracker = Tracker(uri, study.name, artifact_root=results / "mlartifacts")  # opens in the background
    reports.preload_in_background()
    _start_ray_early(study, options, results, wanted)
    tracker.start_study(
        study.name,
        {"study_file": study.path, "trainable": study.trainable, "metric": study.metric, "mode": study.mode,
         "seed": study.seed, "defaults": dict(study.defaults)},
        run_id=state.get("mlflow_run_id") if state.get("tracking_uri") == uri else None,
        plan=tracking_notes.study_plan(study),
    )  # fmt: skip
    print(f"Study {study.name}: {len(study.sections)} sections, results in {results}", file=out)

    finished: dict[str, SectionOutcome] = {}  # what later sections carry from (carry.carry)
    outcomes: list[SectionOutcome] = []
    data_cache: dict[Any, Any] = {}
    status = "FAILED"
    interrupted: Interrupted | None = None
    failure: BaseException | None = None  # what ends the run early, if something does
    try:
        for section in study.sections:
            if stop.requested:
                raise Interrupted(f"stopped by {stop.reason} before section {section.id}")
            try:
                carried, parents = carry.carry(study, section, finished)
            except KeyError as e:
                if section.id not in wanted:
                    continue  # not asked for, and what it inherits did not run: leave it
                raise StudyFailed(
                    f"section {section.id} inherits from section {e.args[0]}, which has no finished results in "
                    f"{results}; run that section first or set `inherit` to leave it out"
                ) from None
            if (short := carry.shortfall(section, parents)) is not None:
                print(f"warning: {short}", file=out)
            if parents and section.id in wanted:
                print(f"  {section.id} {section.name}: crosses its sweep with {carry.describe_parents(parents)}", file=out)
            plans = planning.plan_section(study, spec, section, carried, parents)
            reference = planning.reference_values(study, spec, section, carried)
            fingerprint = planning.fingerprint(study, section, plans)
            saved = records.read_section(results, section.id)
            if saved and saved.get("fingerprint") == fingerprint and saved.get("best") is not None:
                outcome = _read_back(section, results, saved)
                if test_eval.pending(study, section, saved) and outcome.best is not None:  # stopped during it
                    test_eval.evaluate_read_back(study, spec, section, outcome.best, results, options, data_cache,
                                                 tracker, lambda: stop.requested, out)  # fmt: skip
                print(f"  {section.id} {section.name}: finished earlier, best {_describe(study, outcome.best, section.select)}", file=out)
            elif section.id not in wanted:
                continue
            else:
                outcome = _run_section(study, spec, section, plans, reference, fingerprint, results, tracker, options,
                                       data_cache, stop)  # fmt: skip
            outcomes.append(outcome)
            if outcome.best is None:
                raise StudyFailed(
                    f"section {section.id} ({section.name}): none of its {len(outcome.trials)} trials completed "
                    f"with a finite {study.metric}; nothing to carry forward. Errors: "
                    + "; ".join(sorted({t.error or t.status for t in outcome.trials}))[:2000]
                )
            finished[section.id] = outcome
        if stop.requested:  # the last section finished although a stop was asked for
            raise Interrupted(f"stopped by {stop.reason} after the last section")
        status = "FINISHED"
    except Interrupted as e:
        status, interrupted, failure = "KILLED", e, e
        raise
    except BaseException as e:
        failure = e
        raise
    finally:
        facts = reports.StudyFacts.from_study(study, spec)
        # study.json also holds what `expgrid report` needs, so the report can be rebuilt from
        # the results alone; "sections" are those this run's summary shows, in order. Written
        # before the report (whatever happens to it), and again with the MLflow run id once
        # MLflow's writes are done: the report is made while they drain.
        facts_json = {**facts.to_json(), "study_file": str(study.path), "tracking_uri": uri,
                      "sections": [o.section.id for o in outcomes],
                      "interrupted": None if interrupted is None else str(interrupted)}  # fmt: skip
        previous_run = state.get("mlflow_run_id") if state.get("tracking_uri") == uri else None
        with _unless_failing(failure):
            records.write_json(results / "study.json", {**facts_json, "mlflow_run_id": previous_run})
        report = None if isinstance(failure, OSError) else _study_report(facts, outcomes, results, out,
                                                                         facts_json["interrupted"])  # fmt: skip
        artifacts: dict[str, Any] = {f"report/{p.name}": p for p in (report.files if report else [])}
        tracker.end_study(status, {"summary.json": report.summary.to_json() if report else [], **artifacts})
        mirror = tracker.finish()  # at most tracking.MIRROR_WAIT seconds, whatever the store does
        with _unless_failing(failure):
            records.write_json(results / "study.json", {**facts_json, "status": status,
                                                         "mlflow_run_id": mirror.study_run_id or previous_run})  # fmt: skip
        for line in mirror.warning(results):  # what the mirror lacks, and the sync command that adds it
            print(line, file=out)
        if interrupted is not None:  # what the caller shows of a stopped study
            interrupted.outcome = StudyOutcome(study, results, uri, outcomes, report.summary if report else None,
                                               experiment_id=mirror.experiment_id)  # fmt: skip
    return StudyOutcome(study, results, uri, outcomes, report.summary if report else None,
                        experiment_id=mirror.experiment_id)


def _start_ray_early(study: Study, options: RunOptions, results: Path, wanted: set[str]) -> None:
    """Start Ray (or attach) in the background while MLflow opens, the first section is planned
    and Tune is imported; the section's connect waits for it. Only when a wanted section has no
    finished record, i.e. will most likely run (a rerun of a finished one starts Ray at its
    connect). Called after the lock and the records' checks, so a refused run starts nothing."""
    def finished(section_id: str) -> bool:
        saved = records.read_section(results, section_id)
        return bool(saved and saved.get("best") is not None)

    if all(finished(s.id) for s in study.sections if s.id in wanted):
        return
    from cluster import connect

    connect.start_in_background(options.address, options.num_cpus, options.num_gpus, options.connect_timeout)


@contextlib.contextmanager
def _unless_failing(failure: BaseException | None) -> Iterator[None]:
    """Bookkeeping at the end of a run that is already failing (a full disk, say) must not hide
    that failure behind its own, most likely the same one: it is skipped then."""
    try:
        yield
    except OSError:
        if failure is None:
            raise


def _selected_sections(study: Study, ids: tuple[str, ...] | None) -> set[str]:
    known = [s.id for s in study.sections]
    if ids is None:
        return set(known)
    for sid in ids:
        if sid not in known:
            raise StudyFileError(study.path, ConfigError("--sections", f"section ids of this study: {', '.join(known)}", sid))
    return set(ids)


def _read_back(section: Section, results: Path, saved: dict[str, Any]) -> SectionOutcome:
    trials = records.read_trials(results, section.id)
    best = next((t for t in trials if t.index == saved["best"]["index"]), None)
    return SectionOutcome(section, trials, best, skipped=True, seconds=float(saved.get("seconds", 0.0)))


# ---------------------------------------------------------------------------------------------
# One section


def _run_section(
    study: Study,
    spec: TrainableSpec,
    section: Section,
    plans: list[planning.TrialPlan],
    reference: dict[str, Any] | None,
    fingerprint: str,
    results: Path,
    tracker: Tracker,
    options: RunOptions,
    data_cache: dict[Any, Any],
    stop: interrupts.StopRequest,
) -> SectionOutcome:
    # Imported here: validation and `expgrid show` never load Ray.
    from cluster import connect, gpu, train_run, trial_side, tune_section

    with _loading_data(spec, plans, data_cache, section.id) as loaded:  # while Ray starts
        available = connect.connect(options.address, options.num_cpus, options.num_gpus, options.connect_timeout)
    interrupts.reinstall()  # ray.init sets a SIGTERM handler of its own
    shared, data_ids = _shared_data(spec, plans, data_cache, trial_side.share, section.id, loaded.data)
    resources = gpu.resolve(
        study.resources_of(section), spec, plans, available,
        data_for=lambda plan: shared.get(data_ids.get(plan.index)), stream=options.stream,
    )  # fmt: skip
    workers = max(train_run.workers_of(p.config) for p in plans)  # data-parallel trials: processes each
    admission.check_fits(section, resources, connect.node_resources(), available, workers)

    folder = records.section_dir(results, section.id)
    tune_name, storage = f"section-{section.id}", options.storage or str(results / "tune")
    resume = options.resume and folder.exists() and tune_section.can_resume(storage, tune_name)
    if folder.exists() and not resume:  # an unfinished earlier attempt: its trials rerun from the start
        for stale in ("trials.jsonl", "trials.json", "section.json", "rows.jsonl"):
            (folder / stale).unlink(missing_ok=True)
    trials = [TrialRecord(index=p.index, swept=p.swept, config=p.config,
                          parent=p.parent.to_json() if p.parent else None) for p in plans]  # fmt: skip
    swept = planning.swept_names(section, plans)
    out = options.stream or sys.stdout
    ended_before: set[int] = set()
    if resume:
        ended_before = records.read_progress(results, section.id, trials,
                                             warn=lambda text: print(f"warning: {text}", file=out))  # fmt: skip
        print(f"  {section.id} {section.name}: resuming ({len(ended_before)} of {len(trials)} trials had ended)", file=out)
    fixed = {k: v for k, v in flatten(plans[0].config).items() if k not in swept}
    tracker.start_section(section.id, section.name, fixed,
                          plan=tracking_notes.section_plan(study, section, swept, [p.swept for p in plans]))
    max_t = max(int(p.config.get("epochs") or 1) for p in plans)
    trial_params = [
        {"index": p.index, "config": p.config, "ref": spec.ref, "data": data_ids.get(p.index),
         "rules": planning.trial_rules(study, section, p.config, max_t).to_json()}
        for p in plans
    ]  # fmt: skip
    max_concurrent = options.max_concurrent or section.max_concurrent or study.max_concurrent
    # ASHA decides per trial and a best-epoch section keeps each trial's best checkpoint in Tune:
    # those need one Tune trial per expgrid trial.
    packable = study.scheduler_of(section).kind == "fifo" and not section.select.best_epoch and workers == 1
    packable = packable and not test_eval.wanted(study, section)  # a pack keeps only its current trial's weights
    max_concurrent = admission.admitted_at_once(max_concurrent, resources, available, workers)
    pack = tune_section.trials_per_pack(len(plans), admission.concurrent_slots(resources, available, max_concurrent), packable)
    progress = section_progress(f"{section.id} {section.name}", len(plans), study.metric, options.stream)
    events = SectionEvents(study, section, trials, results, tracker, progress, stop,
                           describe=lambda trial: _describe(study, trial, section.select))
    events.ended_before = ended_before
    events.log = open_section_log(spec, results, study.name, section.id, section.name, study.metric, study.mode)
    for trial in trials:  # the log starts afresh: it gets the trials that ended before a resume too
        if trial.index in ended_before:
            events.log.trial_ended(trial)
    section_run = tune_section.TuneSection(
        name=tune_name,
        storage_path=storage,
        trials=trial_params,
        resources=resources,
        shared=shared,
        max_concurrent=max_concurrent,
        max_failures=study.max_failures_of(section),
        code_path=os.getcwd(),
        scheduler=study.scheduler_of(section),
        max_t=max_t,
        metric=study.metric,
        mode=study.mode,
        # The checkpoint Tune keeps beside the latest: the select monitor's best epoch.
        keep_best_by=section.select.by(study.metric, study.mode)[0] if section.select.best_epoch else None,
        keep_best_mode=section.select.by(study.metric, study.mode)[1],
        pack=pack,
        resume=resume,
        by_value={spec.ref: spec.function()} if ships_by_value(spec) else {},
    )
    events.storage = storage
    # A stop asked for while Ray started or the data loaded: no Tune run to start.
    seconds = 0.0 if stop.requested else _run_trials(section_run, events, out)
    if events.fault is not None:
        progress.close(note=f"stopped: {events.fault.strerror}")
        with contextlib.suppress(OSError):
            events.rows.close()
            _interrupted(section, trials, events, stop)
        raise events.fault
    events.rows.close()
    unfinished = [t for t in trials if t.ended is None]
    if stop.requested and unfinished:
        progress.close(note=f"interrupted ({stop.reason})")
        raise _interrupted(section, trials, events, stop)
    progress.close()
    for trial in unfinished:  # a trial Tune never reported on (e.g. it could not be scheduled)
        trial.status, trial.error = FAILED, trial.error or "trial did not finish"
        records.append_trial(results, section.id, trial)  # trials.jsonl holds every trial at the end
        events.log.trial_ended(trial)
    best = records.best_trial(trials, study.metric, study.mode, section.select)
    events.log.section_ended(best, study.metric)
    summary = {
        "id": section.id,
        "name": section.name,
        "fingerprint": fingerprint,
        "seconds": seconds,
        "metric": study.metric,
        "mode": study.mode,
        "select": section.select.to_json(),
        "best": None if best is None else {
            "index": best.index, "swept": best.swept, "config": best.config,
            "metrics": best.selected(study.metric, study.mode, section.select),
        },
        **reports.section_facts(swept, reference, resources, _carried(plans)),  # what a rebuilt report needs
    }  # fmt: skip
    records.write_section(results, section.id, summary, trials)
    test = test_eval.evaluate_best(study, spec, section, best, results, storage,
                                   shared.get(data_ids.get(best.index)) if best else None, resources,
                                   lambda: stop.requested, out)  # fmt: skip
    report_files = _section_report(reports.StudyFacts.from_study(study, spec), results, section.id, options.stream)
    best_row = best.selected(study.metric, study.mode, section.select) if best else {}
    tracker.end_section(
        section.id,
        section_mlflow_status(best is not None),
        {f"best_{study.metric}": (best_row or {}).get(study.metric, math.nan), "seconds": seconds,
         **test_eval.mlflow_metrics(test)},
        {"best_config.json": summary["best"] or {}, **log_artifacts(events.log),
         **{f"report/{p.name}": p for p in report_files}},  # fmt: skip
        {"expgrid.best_trial": str(best.index) if best else "none", **tracking.carried_tags(summary.get("carried"))},
    )
    if best is not None:
        print(f"  {section.id} {section.name}: best {_describe(study, best, section.select)} ({seconds:.1f}s)", file=out)
    return SectionOutcome(section, trials, best, skipped=False, seconds=seconds)


def _carried(plans: list[planning.TrialPlan]) -> list[dict[str, Any]] | None:
    """The parents a ``top`` section's trials started from, once each, in order (None without)."""
    parents = {p.parent.label: p.parent.to_json() for p in plans if p.parent is not None}
    return list(parents.values()) or None


def _run_trials(tune_section: Any, events: SectionEvents, out: TextIO) -> float:
    """Run the section's Tune experiment; return its wall time. A failure to store records
    (a full disk) is left in ``events.fault`` for the caller. What a killed driver can leave
    behind is mended here: a resumed experiment whose saved state Tune cannot read back (written
    while the disk filled up, say) is set aside, and the trials that had not ended start again
    from their first epoch; resumed trials whose checkpoints Tune had lost run again after it
    (:func:`_recovery`)."""
    from cluster.tune_section import run_section, set_aside

    try:
        seconds = run_section(tune_section, events)
    except Exception as e:
        failure = durable.storage_failure(e, tune_section.storage_path)
        if failure is not None:
            events.storage_failed(failure)
        if events.fault is not None:
            return 0.0  # Tune wraps such errors in its own; the caller reports the OS error
        if not (tune_section.resume and not events.heard):
            raise
        aside = set_aside(tune_section.storage_path, tune_section.name)
        print(f"warning: Tune cannot restore section {events.section.id}'s saved state ({type(e).__name__}: "
              f"{str(e)[:200]}); it was moved to {aside}, and the trials that had not ended start again",
              file=out)  # fmt: skip
        unended = [t for t in tune_section.trials if t["index"] not in events.ended_before]
        return _run_trials(dataclasses.replace(tune_section, resume=False, trials=unended), events, out)
    if events.lost_checkpoints and not events.stop.requested:
        seconds += _run_trials(_recovery(tune_section, events, out), events, out)
    return seconds


def _recovery(tune_section: Any, events: SectionEvents, out: TextIO) -> Any:
    """A Tune run of the resumed trials whose checkpoints Tune had lost: each from its newest
    checkpoint left on disk (a packed trial, or one with none left, from its first epoch)."""
    from cluster.tune_section import newest_checkpoint, set_aside

    lost, events.lost_checkpoints = sorted(events.lost_checkpoints), set()
    trials = []
    for trial in tune_section.trials:
        if trial["index"] in lost:
            newest = None if tune_section.pack > 1 else newest_checkpoint(
                tune_section.storage_path, tune_section.name, trial["index"])  # fmt: skip
            trials.append({**trial, "restore_from": newest})
            where = f"its checkpoint {Path(newest).name}" if newest else "its first epoch"
            print(f"warning: section {events.section.id}: trial {trial['index']}'s checkpoint in Tune's saved state "
                  f"was gone (the driver was killed as Tune replaced it); it goes on from {where}", file=out)  # fmt: skip
    name = f"{tune_section.name}-recovered"
    set_aside(tune_section.storage_path, name)
    return dataclasses.replace(tune_section, name=name, trials=trials, resume=False, pack=1)


def _interrupted(section: Section, trials: list[TrialRecord], events: SectionEvents,
                 stop: interrupts.StopRequest) -> Interrupted:  # fmt: skip
    """Record the trials a stop cut short as ``interrupted`` (in trials.jsonl and MLflow, never
    scored), leave the section unfinished (no section.json: ``--resume`` continues it) and say so."""
    now = time.time()
    running = [t for t in trials if t.status == RUNNING]
    for trial in running:
        trial.status = INTERRUPTED
        records.append_trial(events.results, section.id, trial)
        events.tracker.end_trial(section.id, trial.index, MLFLOW_STATUS[INTERRUPTED],
                                 {"expgrid.status": INTERRUPTED, "expgrid.retries": str(trial.retries),
                                  "expgrid.last_epoch": str(trial.last_epoch)}, now)  # fmt: skip
    events.tracker.end_section(section.id, "KILLED", {}, log_artifacts(events.log),
                               {"expgrid.interrupted": stop.reason or ""})  # fmt: skip
    ended = sum(t.ended is not None for t in trials)
    return Interrupted(
        f"section {section.id} ({section.name}) interrupted by {stop.reason}: {ended} of {len(trials)} trials had "
        f"ended, {len(running)} {'was' if len(running) == 1 else 'were'} running (recorded as interrupted)",
        section=section.id,
    )


def _shared_data(
    spec: TrainableSpec, plans: list[planning.TrialPlan], cache: dict[Any, Any], share: Any, section_id: str = "",
    loaded: dict[Any, Any] | None = None,
) -> tuple[dict[str, Any], dict[int, str]]:  # fmt: skip
    """Load each distinct dataset once (on the driver) and ``share`` it (``ray.put``): trials get
    its object reference, so each node holds one copy however many trials read it, and nothing
    of it rides in the function Ray ships per actor class. Returns (data id → reference, trial
    index → data id). ``cache`` (data key → reference) keeps a dataset for the later sections
    of the study that use it; the driver keeps only the reference, not a second copy.
    ``loaded``: data key → data loaded already (:func:`_loading_data`), shared without loading."""
    if not spec.takes_data:
        return {}, {}
    loaded = loaded if loaded is not None else {}
    shared: dict[str, Any] = {}
    ids: dict[int, str] = {}
    keys: dict[Any, str] = {}
    for plan in plans:
        key = data_key_of(spec, plan.config)
        if key not in keys:
            keys[key] = f"data{len(keys)}"
            if key not in cache:
                cache[key] = share(loaded.pop(key) if key in loaded else _load(spec, plan, section_id))
            shared[keys[key]] = cache[key]
        ids[plan.index] = keys[key]
    return shared, ids


def _load(spec: TrainableSpec, plan: planning.TrialPlan, section_id: str) -> Any:
    try:
        return spec.load_data(plan.config)
    except (ConfigError, OSError) as e:  # changed since `validate` checked it, or only found on reading
        raise StudyFailed(f"section {section_id}: loading the data of trial {plan.index}: {e}") from None


class _DataLoad(threading.Thread):
    """The section's datasets not yet shared, loaded on a thread (``data``: data key → data)."""

    def __init__(self, spec: TrainableSpec, plans: list[planning.TrialPlan], cache: dict[Any, Any], section_id: str):
        super().__init__(name="expgrid-data-load", daemon=True)
        self.spec, self.plans, self.cache, self.section_id = spec, plans, cache, section_id
        self.data: dict[Any, Any] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for plan in self.plans:
                key = data_key_of(self.spec, plan.config)
                if key not in self.cache and key not in self.data:
                    self.data[key] = _load(self.spec, plan, self.section_id)
        except BaseException as e:  # noqa: BLE001 - raised in the waiting thread
            self.error = e


@contextlib.contextmanager
def _loading_data(spec: TrainableSpec, plans: list[planning.TrialPlan], cache: dict[Any, Any],
                  section_id: str) -> Iterator[_DataLoad]:  # fmt: skip
    """Load the section's data on a thread while the body runs (connecting: a cold start of Ray
    takes seconds, mostly waiting for its processes, and the first load imports torch and reads
    the files), then wait for it; its error is raised here. Yields the loader (``data``)."""
    loader = _DataLoad(spec, plans, cache, section_id)
    if spec.takes_data:
        loader.start()
    try:
        yield loader
    finally:
        while loader.is_alive():  # in slices: the caller's signal handlers run meanwhile
            loader.join(0.1)
    if loader.error is not None:
        raise loader.error


# ---------------------------------------------------------------------------------------------
# Reports: tables and plots per section, the summary and the Parquet store per study. A report
# that cannot be written costs a warning, never the study: the results are on disk, and
# `expgrid report RESULTS_DIR` writes it again from them.


def _section_report(facts: reports.StudyFacts, results: Path, section_id: str, stream: TextIO | None) -> list[Path]:
    try:
        return reports.write_section_report(facts, reports.load_section(results, section_id), results)
    except Exception as e:
        print(f"warning: report of section {section_id}: {type(e).__name__}: {e}", file=stream or sys.stdout)
        return []


def _study_report(facts: reports.StudyFacts, outcomes: list[SectionOutcome], results: Path,
                  stream: TextIO, interrupted: str | None) -> reports.Report | None:  # fmt: skip
    try:
        sections = [reports.load_section(results, o.section.id) for o in outcomes]
        for outcome, section in zip(outcomes, sections):
            if outcome.skipped and not (reports.section_report_dir(results, section.id) / "table.md").exists():
                reports.write_section_report(facts, section, results)  # finished before reports existed
        return reports.write_study_report(facts, sections, results, interrupted)
    except Exception as e:
        print(f"warning: study report: {type(e).__name__}: {e}", file=stream)
        return None
