"""The one module that calls Ray. Ray's reporting, checkpoint and Tuner APIs keep changing
between releases; everything else in expgrid talks to these few functions instead.

Written against Ray 2.60 (Train V2 on by default): inside a Tune function trainable use
``tune.report`` / ``tune.get_checkpoint`` (``ray.train.*`` raises there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import math
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

# isort: split
# First: Ray reads at import what keeps a local Ray on 127.0.0.1 (see cluster/local_ray.py).
from cluster import attach, local_ray

# isort: split
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

import expgrid.reporter as reporter
from expgrid import interrupts, wire
from expgrid.planning import asha_grace_period
from expgrid.stopping import ASHA_STOPPED, TrialRules
from expgrid.study import Scheduler

_CHECKPOINT_FILE = "expgrid_state.pkl"

# Tune's usage telemetry for callbacks imports ray.air.integrations.mlflow, i.e. all of MLflow
# (1.5-3 s on a 2-CPU machine), in the driver at the start of every section, only to compare
# callback class names; expgrid's driver otherwise never imports MLflow (its writes run in a
# process of their own). Skip that telemetry tag; where Ray has moved it, nothing changes.
try:
    from ray.air._internal import usage as _air_usage

    if hasattr(_air_usage, "tag_callbacks"):
        _air_usage.tag_callbacks = lambda callbacks: False
except ImportError:
    pass


def _end_of_experiment_without_waiting_for_starts() -> None:
    """At the end of an experiment Tune stops its actors gracefully and waits up to 5 s. With
    actor reuse, an actor Tune asked for earlier may only be starting then (a new worker
    importing Tune: 1.5-3 s on 2 CPUs), and its stop waits for that start. Plain Tune loses
    0-4 s this way at the end of about a third of the sections on a 2-CPU machine. Every trial has
    ended at that point, so wait only while actors keep stopping (a started actor stops in
    milliseconds) and kill the rest, as Tune's actor manager does last. Where Tune has changed
    its internals, its own clean-up runs."""
    try:
        from ray.tune.execution.tune_controller import TuneController
    except ImportError:
        return
    steps = ("_cleanup_trials", "_schedule_trial_stop", "_cleanup_cached_actors")
    if not all(hasattr(TuneController, step) for step in steps):
        return
    tune_cleanup = TuneController._cleanup_trials

    def cleanup_trials(controller: Any) -> None:
        manager = getattr(controller, "_actor_manager", None)
        known = all(hasattr(controller, name) for name in ("_actor_to_trial", "_stopping_actors"))
        if not known or not all(hasattr(manager, name) for name in ("num_total_actors", "next", "cleanup")):
            tune_cleanup(controller)
            return
        for tracked_actor in list(controller._actor_to_trial):
            controller._schedule_trial_stop(controller._actor_to_trial[tracked_actor])
        controller._cleanup_cached_actors(force_all=True)
        deadline = time.monotonic() + 5
        while manager.num_total_actors and time.monotonic() < deadline:
            if not manager.next(timeout=0.25):
                break  # nothing stopped for 0.25 s: what is left is still starting
        # Tune's own forced clean-up would still wait for a starting actor; this kills it.
        controller._stopping_actors.clear()
        manager.cleanup()

    TuneController._cleanup_trials = cleanup_trials


_end_of_experiment_without_waiting_for_starts()


# The variable Tune gives every trial actor: PyTorch Lightning must not fork in a Ray worker.
_TRIAL_ENV = {"PL_DISABLE_FORK": "1"}


def _trial_actors_on_idle_workers() -> None:
    """Tune registers its trial actors with a runtime env that sets ``PL_DISABLE_FORK=1`` (and
    passes on AWS credentials and some Train settings where the driver has them). Any runtime
    env makes Ray set it up and start a new worker process for each actor instead of taking one
    of the idle workers it keeps started: in a plain Tune script on 2 CPUs the first trial
    started 7.1-7.7 s after ``fit()`` with it, 2.6-2.8 s without. When
    nothing needs passing on but that variable, register the actors without a runtime env and
    set it in the trial itself (``_trial_entry``), before any user code runs."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    cache = getattr(class_cache, "_ActorClassCache", None)
    if cache is None or getattr(class_cache, "DEFAULT_ENV_VARS", None) != _TRIAL_ENV:
        return
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    tune_get = cache.get

    def get(self: Any, trainable_cls: Any) -> Any:
        if propagated is None or any(name in os.environ for name in propagated):
            return tune_get(self, trainable_cls)  # something to pass on: Tune's way
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    cache.get = get


_trial_actors_on_idle_workers()

# Keep Tune quiet: expgrid prints its own progress line. Set before Tune reads them.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0
# No CSV / JSON / TensorBoard file per trial: expgrid keeps its own records and MLflow runs.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Errors of Ray tasks no one waited for are Tune's own (a trial actor stopped mid-task at a
# section's end or a stop); expgrid records every trial's error itself.
os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
# ...and so the result grid Tune builds at the end finds no such files; it need not say so.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------
# Connecting


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    connect_timeout: float = 30.0,
) -> dict[str, float]:
    """Start a private local Ray (address None) or attach to a running cluster; return its resources.

    A local Ray listens on 127.0.0.1 only and keeps Ray's token authentication (Ray's default);
    what an earlier expgrid driver that died left of its local Ray is stopped first. Attaching
    fails within ``connect_timeout`` seconds, with one line naming the address, when no Ray
    cluster answers there (``attach.ClusterUnreachable``). A session already connected (a
    test's ``ray.init``, ``ray submit``) is used as it is."""
    if not ray.is_initialized():
        if address is None and os.environ.get("RAY_ADDRESS"):
            address = "auto"  # what ray.init does with $RAY_ADDRESS; probed like any address
        with _keeping_sigterm_handler():
            if address is None:
                _start_local(num_cpus, num_gpus)
            else:
                _attach(address, connect_timeout)
    return cluster_resources()


class _WithoutOptOutAdvice(logging.Filter):
    """Ray logs "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled
    to opt out" at every start of a local Ray (and attach with `auto`) where the user has not
    set RAY_AUTH_MODE: at every expgrid run, advising to switch off what keeps it safe. Only that
    message is dropped; README.md says what the token protects and where it is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_WithoutOptOutAdvice())


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """ray.init replaces the process's SIGTERM handler with its own (sys.exit). A handler the
    caller installed (e.g. expgrid's own interrupt handling) is put back; Python's default is
    left replaced, so that SIGTERM still shuts Ray down cleanly (atexit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _start_local(num_cpus: int | None, num_gpus: int | None) -> None:
    # Public, and what ray.init is about to give the new node: 127.0.0.1 unless Ray was imported
    # before cluster.local_ray set it up (or the user switched multi-node clusters on).
    node_ip = ray.util.get_node_ip_address()
    if not _is_loopback(node_ip):
        raise local_ray.NotLoopback(node_ip)
    local_ray.clean_up_orphans()
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        print(f"warning: RAY_AUTH_MODE={os.environ['RAY_AUTH_MODE']}: this local Ray runs without token "
              "authentication, so any process of this machine can run code in it; unset RAY_AUTH_MODE to keep "
              "Ray's default", file=sys.stderr)  # fmt: skip
    with local_ray.marked_start() as marker:
        context = ray.init(
            address="local",  # a new private instance, never one found on the machine
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            dashboard_host="127.0.0.1",
            log_to_driver=False,  # trial output goes to Ray's log files, not over the progress line
            logging_level=logging.WARNING,
            configure_logging=True,
            # Ray keeps idle workers started for the next tasks and actors, but after 1 s it
            # stops those above its limit, and at a section's start it often counts one too
            # many: the trial actors then wait for new workers (1-1.5 s on 2 CPUs) while the
            # idle ones exit. Keep idle workers for a minute.
            _system_config={"idle_worker_killing_time_threshold_ms": 60_000},
        )
    local_ray.record(marker, (getattr(context, "address_info", None) or {}).get("session_dir"))
    local_ray.keep_token_private()


def _attach(address: str, timeout: float) -> None:
    target = attach.resolve(address)
    shown = address if target == address else f"{address} ({target})"  # `auto (10.0.0.5:6379)`
    attach.probe(shown, target, timeout, with_token=attach.sends_token(address))
    try:
        # The address as given: Ray sends its token unasked only to `auto` (the machine's own
        # Ray), never to an address typed in.
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, configure_logging=True)
    except (ConnectionError, RuntimeError, TimeoutError, ray.exceptions.RayError) as e:
        raise attach.ClusterUnreachable(shown, _attach_problem(e)) from None


def _attach_problem(error: BaseException) -> str:
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    # Ray raises AuthenticationError, or a RuntimeError holding the traceback of one as text.
    if any(type(e).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(e) for e in chain):
        return f"the cluster refused this driver's token (missing or wrong); {attach.TOKEN_ADVICE}"
    first = next((str(e).strip().splitlines()[0] for e in reversed(chain) if str(e).strip()), type(chain[0]).__name__)
    return f"could not attach ({first[:300]})"


def cluster_resources() -> dict[str, float]:
    res = ray.cluster_resources()
    return {"cpu": float(res.get("CPU", 0.0)), "gpu": float(res.get("GPU", 0.0))}


def node_resources() -> list[dict[str, float]]:
    """CPUs and GPUs of each alive node (for "does one trial fit on some node")."""
    return [
        {"cpu": float(n["Resources"].get("CPU", 0.0)), "gpu": float(n["Resources"].get("GPU", 0.0))}
        for n in ray.nodes()
        if n.get("Alive")
    ]


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
    local_ray.forget()  # the record of a local Ray this process started, if any


# ---------------------------------------------------------------------------------------------
# Inside a trial


def _save_checkpoint(state: Any) -> str:
    """Write ``state`` (picklable) into a new temporary directory, a checkpoint's contents."""
    tmp = tempfile.mkdtemp(prefix="expgrid-ckpt-")
    with open(Path(tmp) / _CHECKPOINT_FILE, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    return tmp


def _report(metrics: dict[str, Any], state: Any | None = None) -> None:
    if state is None:
        tune.report(metrics)
        return
    tmp = _save_checkpoint(state)
    try:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # Tune has copied it to the trial's storage


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def _load_checkpoint(fallback: str | None = None) -> Any | None:
    """The trial's checkpoint from Tune, else the one in ``fallback`` (a checkpoint directory
    of an earlier experiment, see ``newest_checkpoint``)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None and fallback is not None:
        checkpoint = tune.Checkpoint.from_directory(fallback)
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        with open(Path(d) / _CHECKPOINT_FILE, "rb") as f:
            return pickle.load(f)


class RaySession(reporter.Session):
    """``expgrid.reporter`` session inside a Tune trial: metrics and checkpoints go to Tune."""

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        _report(wire.encode([wire.Placed(_node_id()), *messages]), state)

    def _load(self) -> dict[str, Any] | None:
        return _load_checkpoint(self.restore_from)

    # Set by _trial_entry: a checkpoint to start from when Tune has none for this trial.
    restore_from: str | None = None
    # Set by _trial_entry for a data-parallel trial: per-worker resources and where Train keeps
    # its run (the same name on a retry, so Train resumes from that run's latest checkpoint).
    train: dict[str, Any] | None = None

    # Set by _call: the trial's data and the object reference it came from, so that a
    # data-parallel launch of that same data hands its workers the reference, not a new copy.
    data_ref: Any = None
    data: Any = None

    def launch_data_parallel(self, fn: Callable[..., Any], config: dict[str, Any], data: Any, workers: int) -> None:
        if self.train is None:
            raise RuntimeError("expgrid.data_parallel: this trial was not planned as data-parallel "
                               "(its config has no `workers` > 1)")  # fmt: skip
        ref = self.data_ref if self.data_ref is not None and data is self.data else None
        run_data_parallel(fn, config, data, workers, self.rules, self.train, data_ref=ref)


_functions: dict[str, Callable[..., Any]] = {}


def _function(ref: str, code_path: str) -> Callable[..., Any]:
    """The trainable named by ``ref``, imported once per worker process."""
    fn = _functions.get(ref)
    if fn is None:
        if code_path and code_path not in sys.path:
            sys.path.insert(0, code_path)  # a user's module next to the study
        from expgrid.trainable_spec import import_ref

        fn = _functions[ref] = import_ref(ref)
    return fn


# ---------------------------------------------------------------------------------------------
# Data: through the object store
#
# The driver puts each distinct dataset into Ray's object store once (``share``); a trial gets
# only its object reference and fetches the data where it runs, so each node holds one copy
# however many trials read it. Nothing of the data may ride in what Ray pickles per actor
# class (Tune's ImplicitFunc around _trial_entry): Ray warns above 10 MB, refuses above 95 MiB
# (FUNCTION_SIZE_ERROR_THRESHOLD), and ships that class to every worker that runs a trial.


def share(data: Any) -> Any:
    """Put ``data`` in the object store once and return its reference (``ray.ObjectRef``)."""
    return ray.put(data)


# What this worker process has fetched, by object reference (hex id). A reused trial actor and a
# pack run several trials in one process, and each would otherwise ray.get the data again: a
# new deserialisation per trial, and a new copy for anything Ray cannot return zero-copy (torch
# tensors). Kept small: a reused actor of a section sweeping a data option meets a few datasets.
_FETCHED_KEPT = 4
_fetched: dict[str, Any] = {}


def fetch(ref: Any) -> Any:
    """The data behind ``ref``, fetched once per worker process (see ``_fetched``).

    NumPy arrays come back zero-copy: read-only views of the object store's shared memory,
    the same memory in every process of the node. torch tensors are unpickled, i.e. copied into
    each process (unless every process runs with Ray's RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1),
    which is why the built-in trainables' data are NumPy arrays. The data is shared by every
    trial of this process: a trainable must not modify it."""
    key = ref.hex()
    if key not in _fetched:
        data = ray.get(ref)
        while len(_fetched) >= _FETCHED_KEPT:
            _fetched.pop(next(iter(_fetched)))  # the oldest
        _fetched[key] = data
    return _fetched[key]


def _call(fn: Callable[..., Any], member: dict[str, Any], shared: dict[str, Any] | None,
          session: reporter.Session | None = None) -> None:  # fmt: skip
    if member["data"] is None:
        fn(member["config"])
        return
    ref = shared[member["data"]]  # type: ignore[index]
    data = fetch(ref)
    if isinstance(session, RaySession):
        session.data_ref, session.data = ref, data
    fn(member["config"], data)


def _trial_entry(param: dict[str, Any], shared: dict[str, Any] | None = None, code_path: str = "") -> None:
    """What each Tune trial runs: one expgrid trial, or a pack of them one after another.

    ``shared``: data id (a trial's ``data``) → object reference of that data (``share``)."""
    os.environ.update(_TRIAL_ENV)  # see _trial_actors_on_idle_workers
    members = param["expgrid"]["members"]
    if len(members) > 1:
        _run_pack(param["expgrid"], shared, code_path)
        return
    member = members[0]
    session = RaySession(TrialRules.from_json(member["rules"]))
    session.train = member.get("train")
    session.restore_from = member.get("restore_from")
    with reporter.active(session):
        try:
            _call(_function(member["ref"], code_path), member, shared, session)
        except reporter.StopTrial:
            pass
        session.flush()


# ---------------------------------------------------------------------------------------------
# Packs: several small trials in one Tune trial
#
# Tune spends about 0.2 s of driver work on every trial it schedules, even with actor reuse;
# a no-op trial costs nothing else. So a FIFO section of many small trials runs them in packs:
# one Tune trial runs several expgrid trials in turn, and its results carry every message tagged
# with the trial it belongs to, plus start / retry / end events (``wire.PackEvent``). A trial
# that raises is retried in the same process from its last checkpoint (up to max_failures
# times), as Tune would; if the whole pack is lost (a node dies), Tune restarts it from its last
# checkpoint, which says which of its trials are done, and the driver ignores repeats of trials
# it has already seen end.

class _Pack:
    """The messages of a pack's trials, sent to Tune at most every ``interval`` seconds."""

    def __init__(self, interval: float, done: list[int]):
        self.interval, self.done = interval, done
        self.messages: list[wire.Message] = []
        self.last_send = time.monotonic()

    def event(self, kind: str, index: int, error: str | None = None) -> None:
        self.messages.append(wire.PackEvent(kind, index, time.time(), error))

    def add(self, messages: list[wire.Message], checkpoint: dict[str, Any] | None) -> None:
        self.messages.extend(messages)
        if checkpoint is not None or time.monotonic() - self.last_send >= self.interval:
            self.send(checkpoint)

    def send(self, checkpoint: dict[str, Any] | None = None) -> None:
        if not self.messages and checkpoint is None:
            return
        messages, self.messages = self.messages, []
        self.last_send = time.monotonic()
        _report(wire.encode([wire.Placed(_node_id()), *messages]), checkpoint)


class _PackedSession(reporter.Session):
    """One trial of a pack: its rows go to the pack tagged with its index; a retry restarts from
    the last checkpoint it handed over."""

    def __init__(self, rules: Any, index: int, pack: _Pack, resume: dict[str, Any] | None):
        # Batching is the pack's job, so every report goes straight to it.
        super().__init__(dataclasses.replace(rules, report_interval=0.0))
        self.index, self.pack, self.last_state = index, pack, resume

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        messages = [dataclasses.replace(m, trial=self.index) for m in messages]
        checkpoint = None
        if state is not None:
            self.last_state = state
            checkpoint = {"done": list(self.pack.done), "current": self.index, "state": state}
        self.pack.add(messages, checkpoint)

    def _load(self) -> dict[str, Any] | None:
        return self.last_state


def _error_line(error: Exception) -> str:
    """A packed trial's error in one line, as an unpacked trial's (the last line of Tune's error
    file): an error re-raised from a DataLoader worker carries the worker's whole traceback in
    its message, and its last line is the original error (e.g. "OSError: cannot decode image …")."""
    lines = [line.strip() for line in f"{type(error).__name__}: {error}".splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _run_pack(pack_param: dict[str, Any], shared: dict[str, Any] | None, code_path: str) -> None:
    saved = _load_checkpoint() or {"done": [], "current": None, "state": None}
    pack = _Pack(interval=pack_param["report_interval"], done=list(saved["done"]))
    for member in pack_param["members"]:
        index = member["index"]
        if index in pack.done:
            continue
        resume = saved["state"] if saved["current"] == index else None
        session = _PackedSession(TrialRules.from_json(member["rules"]), index, pack, resume)
        pack.event("start", index)
        error, failures = None, 0
        while True:
            with reporter.active(session):
                try:
                    _call(_function(member["ref"], code_path), member, shared)
                    error = None
                except reporter.StopTrial:
                    error = None
                except Exception as e:  # noqa: BLE001 - any error of the user's code ends or retries the trial
                    error = _error_line(e)
                session.flush()
            if error is None or failures >= pack_param["max_failures"]:
                break
            failures += 1
            pack.event("retry", index, error=error)
            session = _PackedSession(session.rules, index, pack, session.last_state)
        pack.done.append(index)
        pack.event("end", index, error=error)
    pack.send()


# ---------------------------------------------------------------------------------------------
# Data-parallel trials: Ray Train inside a Tune trial
#
# Train V2 (the default in 2.60) cannot be a Tune trainable itself. The supported pattern: the
# Tune trial (a token CPU share) builds and fits a TorchTrainer whose workers hold the real
# resources; TuneReportCallback forwards rank 0's reports to the Tune trial, so ASHA and the
# driver see them as any trial's. Train's report is collective: every rank reports every epoch.


def workers_of(config: dict[str, Any]) -> int:
    """Processes a trial asks for: its config's ``workers`` (1 when absent)."""
    workers = config.get("workers")
    return int(workers) if isinstance(workers, int) and workers > 1 else 1


TRIAL_CPU_OF_TRAIN_RUN = 0.01  # what the Tune trial driving a Train run reserves itself


def _worker_cpu(cpu: float, workers: int) -> float:
    """A worker's CPU share: the section's, less its part of the Tune trial's token share, so a
    trial of N workers at 1 CPU fits on N CPUs. Rounded down to Ray's 1/10000 resource unit."""
    return math.floor((cpu - TRIAL_CPU_OF_TRAIN_RUN / workers) * 10_000) / 10_000


class TrainSession(reporter.Session):
    """``expgrid.reporter`` session on one Ray Train worker."""

    def __init__(self, rules: Any):
        # No time-based batching: Train's report is collective, so every rank must report at the
        # same epochs, and a rank's clock must not decide that.
        super().__init__(dataclasses.replace(rules, report_interval=0.0))
        import ray.train

        self.rank = ray.train.get_context().get_world_rank()
        self.restarted = False  # Train restarted the workers (a failure): the driver counts a retry

    def _deliver(self, messages: list[wire.Message], state: dict[str, Any] | None) -> None:
        import ray.train

        if self.restarted:
            messages = [wire.Restarted(), *messages]
            self.restarted = False
        metrics = wire.encode(messages)
        if state is None or self.rank != 0:  # rank 0's model is every rank's (DDP keeps them equal)
            ray.train.report(metrics)
            return
        tmp = _save_checkpoint(state)
        try:
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        self.restarted = True
        with checkpoint.as_directory() as d:
            with open(Path(d) / _CHECKPOINT_FILE, "rb") as f:
                return pickle.load(f)


def run_data_parallel(fn: Callable[..., Any], config: dict[str, Any], data: Any, workers: int, rules: Any,
                      train: dict[str, Any], data_ref: Any = None) -> None:  # fmt: skip
    """Fit a TorchTrainer of ``workers`` processes running ``fn`` (see expgrid.data_parallel);
    ``train`` holds what the driver planned: per-worker CPU / GPU, run name and storage.

    ``data_ref``: the object reference ``data`` was fetched from (the section's shared data),
    handed on to the workers as it is; data the trainable made itself is put in the store here."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpu = float(train["gpu"])
    per_worker = {"CPU": float(train["cpu"]), **({"GPU": gpu} if gpu > 0 else {})}
    if data_ref is None and data is not None:
        data_ref = ray.put(data)

    def loop(_: dict[str, Any]) -> None:
        session = TrainSession(rules)
        with reporter.active(session):
            try:
                fn(config, fetch(data_ref)) if data_ref is not None else fn(config)
            except reporter.StopTrial:
                pass
            session.flush()

    trainer = TorchTrainer(
        loop,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpu > 0, resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=train["name"],
            storage_path=train["storage_path"],
            callbacks=[TuneReportCallback()],
            # A worker (or its node) lost: Train restarts the workers from the latest checkpoint.
            failure_config=ray.train.FailureConfig(max_failures=train["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=train["keep_best_by"],
                checkpoint_score_order=train["mode"],
            ),
        ),
    )
    trainer.fit()


# ---------------------------------------------------------------------------------------------
# Running a section


class TrialEvents(Protocol):
    """What the driver hears about each trial (keyed by the trial's index in the section)."""

    def trial_started(self, index: int, at: float | None = None) -> None: ...

    def trial_rows(self, index: int, rows: list[dict[str, Any]]) -> None:
        """Epoch rows, oldest first: each the trainable's own metrics."""

    def trial_stopped(self, index: int, reason: str) -> None:
        """The trial stopped itself (diverged, early_stopped) or ASHA cut it (asha_stopped)."""

    def trial_artifacts(self, index: int, files: dict[str, Any], epoch: int) -> None: ...

    def trial_retried(self, index: int, error: str) -> None: ...

    def trial_restarted(self, index: int) -> None:
        """Ray Train restarted the trial's workers from its last checkpoint (a retry)."""

    def trial_placed(self, index: int | None, node_id: str) -> None: ...

    def trial_finished(self, index: int, error: str | None, at: float | None = None) -> None: ...

    def results_received(self) -> None:
        """Every row of one Tune result has been handed over: make them durable now, before Tune
        registers the result's checkpoint (a resumed trial continues after that checkpoint)."""


@dataclasses.dataclass
class TuneSection:
    name: str  # experiment folder name under storage_path
    storage_path: str  # absolute path or URI
    trials: list[dict[str, Any]]  # one dict per trial: index, config, ref, data, rules (TrialRules.to_json())
    resources: dict[str, float]  # per trial: cpu, gpu
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)  # data id → object reference (share)
    max_concurrent: int | None = None
    max_failures: int = 1
    code_path: str = ""
    scheduler: Scheduler = dataclasses.field(default_factory=Scheduler)
    max_t: int = 1  # epochs of the longest trial (ASHA's last rung)
    metric: str = ""
    mode: str = "max"
    keep_best_by: str | None = None  # keep the checkpoint with the best value of this metric too
    pack: int = 1  # trials per Tune trial (see "Packs" above); 1 for ASHA and best-epoch sections
    resume: bool = False  # restore the experiment at storage_path/name (unfinished and errored trials go on)

    def tune_trials(self) -> list[dict[str, Any]]:
        interval = min((t["rules"]["report_interval"] for t in self.trials), default=1.0)
        size = max(1, self.pack)
        return [
            {"members": self.trials[i : i + size], "max_failures": self.max_failures, "report_interval": interval}
            for i in range(0, len(self.trials), size)
        ]


class _EventBridge(tune.Callback):
    """Turns Tune's trial callbacks and the messages in trials' results (``expgrid.wire``) into
    TrialEvents; ``cuts``: the section's ASHA scheduler, which says which trials it cut."""

    def __init__(self, events: TrialEvents, cuts: CuttingASHA | None = None):
        self.events = events
        self.cuts = cuts
        self.ended: set[int] = set()  # trials whose end the driver has seen (repeats are dropped)
        self.running: dict[str, int] = {}  # Tune trial id → the packed trial it is running
        self.stop_sent = False

    # Tune pickles its run config (callbacks included) into the experiment folder; the events
    # sink holds threads and clients and is the driver's own, so it is left out. The scheduler
    # is pickled in the same file (tuner.pkl), so a restored bridge gets the restored scheduler.
    def __getstate__(self) -> dict[str, Any]:
        return {"cuts": self.cuts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled when Tune restores an experiment: report to the section now being resumed.
        self.events = _restoring_events  # type: ignore[assignment]
        self.cuts = state.get("cuts")
        self.ended, self.running, self.stop_sent = set(), {}, False

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # A stop asked for before this Tune run listened for its stop signal (a Ctrl-C just as
        # the section started): tell it now.
        if not self.stop_sent and interrupts.stop_requested():
            self.stop_sent = True
            interrupts.ask_tune_to_stop()

    @staticmethod
    def _members(trial: Any) -> list[dict[str, Any]]:
        return trial.config["expgrid"]["members"]

    def _single(self, trial: Any) -> int | None:
        members = self._members(trial)
        return int(members[0]["index"]) if len(members) == 1 else None

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is not None:
            self.events.trial_started(index)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Taken out of the result in place: Tune keeps (and saves) only the user's metrics.
        messages = wire.decode(result)
        single = self._single(trial)
        node = None
        for message in messages:
            if isinstance(message, wire.Placed):
                node = message.node
                if single is not None:
                    self.events.trial_placed(single, node)
                continue
            index = single if message.trial is None else message.trial
            if index is None or (single is None and index in self.ended):
                continue  # a restarted pack repeating a trial the driver already has
            self._deliver(trial.trial_id, index, message, node)
        if single is not None and self.cuts is not None and self.cuts.take_cut(trial.trial_id):
            self.events.trial_stopped(single, ASHA_STOPPED)
        self.events.results_received()

    def _deliver(self, tune_id: str, index: int, message: wire.Message, node: str | None) -> None:
        if isinstance(message, wire.Rows):
            self.events.trial_rows(index, list(message.rows))
        elif isinstance(message, wire.Artifacts):
            self.events.trial_artifacts(index, dict(message.files), message.epoch)
        elif isinstance(message, wire.Stopped):
            self.events.trial_stopped(index, message.reason)
        elif isinstance(message, wire.Restarted):
            self.events.trial_restarted(index)
        elif isinstance(message, wire.PackEvent) and message.event == "start":
            self.running[tune_id] = index
            self.events.trial_started(index, at=message.time)
            if node is not None:
                self.events.trial_placed(index, node)
        elif isinstance(message, wire.PackEvent) and message.event == "retry":
            self.events.trial_retried(index, message.error or "")
        elif isinstance(message, wire.PackEvent):  # end
            self.running.pop(tune_id, None)
            self.ended.add(index)
            self.events.trial_finished(index, message.error, at=message.time)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is None:
            index = self.running.get(trial.trial_id)  # the packed trial that was running
        if index is not None:
            self.events.trial_retried(index, _error_text(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        index = self._single(trial)
        if index is not None:
            self.events.trial_finished(index, None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial) or "trial failed"
        for member in self._members(trial):  # a pack that Tune gave up on ends all its open trials
            index = int(member["index"])
            if index not in self.ended:
                self.ended.add(index)
                self.events.trial_finished(index, error)


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


class CuttingASHA(ASHAScheduler):
    """Tune's ASHA, remembering the trials it cut: those it told to STOP before their last
    planned epoch (ASHA also says STOP to a trial that reached ``max_t``; that is no cut). The
    driver's event bridge asks right after Tune has handed the scheduler's decision on (Tune
    calls the scheduler first, then the callbacks, for each result)."""

    def __init__(self, *, max_t: int, **kwargs: Any):
        super().__init__(max_t=max_t, **kwargs)
        self.max_epochs = max_t
        self.cut: set[str] = set()  # Tune trial ids

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        epoch = result.get("epoch")
        if decision == TrialScheduler.STOP and isinstance(epoch, (int, float)) and epoch < self._planned(trial):
            self.cut.add(trial.trial_id)
        return decision

    def _planned(self, trial: Any) -> int:
        epochs = trial.config["expgrid"]["members"][0]["config"].get("epochs")
        return int(epochs) if isinstance(epochs, int) else self.max_epochs

    def take_cut(self, trial_id: str) -> bool:
        """Whether the trial was cut (and, once asked, forget it)."""
        if trial_id not in self.cut:
            return False
        self.cut.discard(trial_id)
        return True


def _scheduler(section: TuneSection) -> Any:
    if section.scheduler.kind != "asha":
        return None  # FIFO: every trial runs all its epochs
    return CuttingASHA(
        time_attr="epoch",
        metric=section.metric,
        mode=section.mode,
        max_t=section.max_t,
        grace_period=asha_grace_period(section.scheduler, section.max_t),
        reduction_factor=section.scheduler.reduction_factor,
        brackets=section.scheduler.brackets,
    )


def _trial_dirname(trial: Any) -> str:
    members = trial.config["expgrid"]["members"]
    first, last = members[0]["index"], members[-1]["index"]
    return f"trial_{first:04d}" if len(members) == 1 else f"pack_{first:04d}-{last:04d}"


_restoring_events: TrialEvents | None = None


def _experiment_path(storage_path: str, name: str) -> str:
    # Not Path(): a storage URI (s3://bucket/x, gs://…) must keep its double slash.
    return f"{storage_path.rstrip('/')}/{name}"


def set_aside(storage_path: str, name: str) -> str:
    """Move an experiment's folder out of the way of a new one under the same name (local
    storage; on an object store the new experiment is written over it). Returns where it went."""
    path = _experiment_path(storage_path, name)
    if "://" in storage_path or not os.path.isdir(path):
        return path
    aside = f"{path}.unrestorable-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, aside)
    return aside


# What Tune says when a restored trial's checkpoint was deleted: the driver died between Tune
# registering a newer checkpoint (which deletes the one before, num_to_keep=1) and saving its
# experiment state, which still names the old one (Ray 2.60's wording).
LOST_CHECKPOINT = "Could not recover from checkpoint as it does not exist on storage anymore"


def newest_checkpoint(storage_path: str, name: str, index: int) -> str | None:
    """The newest checkpoint left on local storage of a trial run as its own Tune trial (not
    packed), or None."""
    folder = Path(_experiment_path(storage_path, name)) / f"trial_{index:04d}"
    if "://" in storage_path or not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("checkpoint_*") if (p / _CHECKPOINT_FILE).is_file())
    return str(found[-1]) if found else None


def _tune_trainable(section: TuneSection) -> Any:
    """The function Tune runs per trial, with its resource request.

    Tune wraps it in a class (ImplicitFunc) that Ray pickles, by value, with everything its
    functions' closures hold. The resources callable ends up there (as the class's
    ``default_resource_request``), so it closes over two numbers, never the section: the
    section holds every trial config, and it used to hold the data itself — that is how a
    150 MiB dataset made "The actor ImplicitFunc is too large". The trial function closes over
    the object references only (``share``); ``tune.with_parameters`` is not used since each
    call leaves its parameter registry in Ray's post-init hooks for the life of the driver."""
    cpu, gpu = float(section.resources["cpu"]), float(section.resources.get("gpu", 0.0))
    shared, code_path = dict(section.shared), section.code_path

    def resources(param: dict[str, Any]) -> Any:
        members = param["expgrid"]["members"]
        if "train" in members[0]:  # its Train workers reserve the section's resources each
            return tune.PlacementGroupFactory([{"CPU": TRIAL_CPU_OF_TRAIN_RUN}])
        return tune.PlacementGroupFactory([{"CPU": cpu, "GPU": gpu}])

    def expgrid_trial(param: dict[str, Any]) -> None:
        _trial_entry(param, shared, code_path)

    # Tune keeps the trainable's name with an experiment and restores (--resume) only one of the
    # same name: the name the trial function had under tune.with_parameters.
    expgrid_trial.__name__ = "_trial_entry"
    return tune.with_resources(expgrid_trial, resources)


def can_resume(storage_path: str, name: str) -> bool:
    """Whether an interrupted section's Tune experiment can be continued."""
    return tune.Tuner.can_restore(_experiment_path(storage_path, name))


def run_section(section: TuneSection, events: TrialEvents) -> float:
    """Run every trial of one section as one Tune experiment; return its wall time (s)."""
    for trial in section.trials:
        if workers_of(trial["config"]) > 1:
            trial["train"] = {
                "cpu": _worker_cpu(section.resources["cpu"], workers_of(trial["config"])),
                "gpu": float(trial["config"].get("gpu_per_worker") or section.resources.get("gpu", 0.0)),
                "name": f"{section.name}-trial_{trial['index']:04d}",
                "storage_path": section.storage_path,
                "max_failures": section.max_failures,
                "keep_best_by": section.keep_best_by,
                "mode": section.mode,
            }
    data_parallel = any("train" in t for t in section.trials)
    trainable = _tune_trainable(section)
    if section.resume:
        # Tune restores the run config it saved, callbacks included; the event bridge in it
        # attaches itself to this section's events as it is unpickled.
        global _restoring_events
        _restoring_events = events
        try:
            start = time.perf_counter()
            tuner = tune.Tuner.restore(_experiment_path(section.storage_path, section.name), trainable,
                                       resume_unfinished=True, resume_errored=True)  # fmt: skip
            tuner.fit()
            return time.perf_counter() - start
        finally:
            _restoring_events = None
    scheduler = _scheduler(section)
    tuner = tune.Tuner(
        trainable,
        param_space={"expgrid": tune.grid_search(section.tune_trials())},
        tune_config=tune.TuneConfig(
            # 20 no-op trials: 34 s without, 5 s with. Not for Train runs: a new actor per trial
            # means a trial cut by ASHA takes its Train run (and the workers' reservations) with it.
            reuse_actors=not data_parallel,
            max_concurrent_trials=section.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            name=section.name,
            storage_path=section.storage_path,
            verbose=0,
            callbacks=[_EventBridge(events, scheduler)],
            failure_config=tune.FailureConfig(max_failures=section.max_failures),
            # The latest checkpoint is always kept (for retries); with a score, the best one too.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute=section.keep_best_by,
                checkpoint_score_order=section.mode,
            ),
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def measure_gpu_peak(ref: str, config: dict[str, Any], data: Any) -> tuple[int, int]:
    """Peak CUDA memory of one trial epoch, measured on a GPU of the cluster (a whole-GPU task).

    ``data``: the object reference of the section's data (``share``), which Ray resolves as the
    task's argument (or the data itself, or None)."""
    from cluster.packing import dry_run_peak

    task = ray.remote(num_gpus=1, num_cpus=1)(dry_run_peak)
    return ray.get(task.remote(ref, config, data))
