"""What runs inside a trial process: the reporting session, checkpoint pickling, packs of trials,
and the data every trial fetches from Ray's object store.

A trial process (a Tune trial actor, a pack, a Ray Train worker) imports this module and
``cluster.train_run`` only: nothing of the driver's side (``tune_section``, ``connect``,
``patches``), so it neither pays for their imports nor runs what they set up.

Written against Ray 2.60 (Train V2 on by default): inside a Tune function trainable use
``tune.report`` / ``tune.get_checkpoint`` (``ray.train.*`` raises there).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

import expgrid.reporter as reporter
from expgrid import wire
from expgrid.stopping import TrialRules

_CHECKPOINT_FILE = "expgrid_state.pkl"

# The variable Tune gives every trial actor: PyTorch Lightning must not fork in a Ray worker.
# Set by the trial itself (``_trial_entry``), so that a Tune whose actors get no runtime env
# (cluster/patches.py, ``actor_cache``) still gives it.
TRIAL_ENV = {"PL_DISABLE_FORK": "1"}

# Runs a data-parallel trial's Ray Train run: ``cluster.train_run.run_data_parallel``, handed in
# by the driver's trial function (cluster/tune_section.py). train_run imports this module, so
# this one cannot import it back.
TrainLauncher = Callable[..., None]


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

    # Set by _trial_entry: what runs a data-parallel trial (see TrainLauncher).
    launch_train: TrainLauncher | None = None

    def launch_data_parallel(self, fn: Callable[..., Any], config: dict[str, Any], data: Any, workers: int) -> None:
        if self.train is None or self.launch_train is None:
            raise RuntimeError("expgrid.data_parallel: this trial was not planned as data-parallel "
                               "(its config has no `workers` > 1)")  # fmt: skip
        ref = self.data_ref if self.data_ref is not None and data is self.data else None
        self.launch_train(fn, config, data, workers, self.rules, self.train, data_ref=ref)


_functions: dict[str, Callable[..., Any]] = {}


def _function(ref: str, code_path: str, by_value: dict[str, Callable[..., Any]] | None = None) -> Callable[..., Any]:
    """The trainable named by ``ref``, imported once per worker process; or the function itself
    when the driver sent it by value (``by_value``: ref → function, see
    ``expgrid.trainable_spec.ships_by_value``: a notebook's function no worker can import)."""
    if by_value and ref in by_value:
        return by_value[ref]
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


def _trial_entry(param: dict[str, Any], shared: dict[str, Any] | None = None, code_path: str = "",
                 launch_train: TrainLauncher | None = None,
                 by_value: dict[str, Callable[..., Any]] | None = None) -> None:  # fmt: skip
    """What each Tune trial runs: one expgrid trial, or a pack of them one after another.

    ``shared``: data id (a trial's ``data``) → object reference of that data (``share``);
    ``launch_train``: what runs a trial planned as data-parallel (see TrainLauncher);
    ``by_value``: trial functions sent as themselves, by ref (see ``_function``)."""
    os.environ.update(TRIAL_ENV)
    members = param["expgrid"]["members"]
    if len(members) > 1:
        _run_pack(param["expgrid"], shared, code_path, by_value)
        return
    member = members[0]
    session = RaySession(TrialRules.from_json(member["rules"]))
    session.train = member.get("train")
    session.restore_from = member.get("restore_from")
    session.launch_train = launch_train
    with reporter.active(session):
        try:
            _call(_function(member["ref"], code_path, by_value), member, shared, session)
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


def _run_pack(pack_param: dict[str, Any], shared: dict[str, Any] | None, code_path: str,
              by_value: dict[str, Callable[..., Any]] | None = None) -> None:  # fmt: skip
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
                    _call(_function(member["ref"], code_path, by_value), member, shared)
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

