"""The GPU check: fractional packing, ``gpu: auto``, AMP bf16 and nccl data parallelism, each
run through ``expgrid run`` on generated data (no downloads), in one command.

    python bench/gpu_check.py [--parts a,b,c,d] [--out DIR]   # on a CUDA machine
    python bench/gpu_check.py --cpu-dry-run [--quick]           # the same code paths, tiny, on the CPU

Sized for about 5 minutes on one H200-class GPU with 16 CPUs (an estimate: it has not run on a
GPU yet); each run has a time limit and the whole check stops by 420 s, so it ends within 8
minutes. It writes small study files to a folder (``--out``, default a new temporary one, kept
and printed: the studies, each run's stdout and stderr, its results, summary.txt) and runs
them with ``expgrid run``:

(a) packing: 8 Fashion-MNIST-shaped MLP trials (generated 28×28 images) at ``gpu: 0.125``, all
    on one GPU at once, against the same 8 at ``gpu: 1``, one at a time. Throughput = trials per
    second of section wall time (``section.json``). Target ≥ 6×.
(b) ``gpu: auto``: the peak memory its one-epoch dry run measured, the packing it chose (the
    line ``expgrid run`` prints, and the share recorded in ``section.json``), for that MLP trial
    and for a resnet20 trial. Target: a measured peak, a GPU share in (0, 1] whose trials fit
    in 85 % of the GPU, every trial completed.
(c) AMP: a resnet20 trial on generated 32×32 images with ``amp: false`` and ``amp: bfloat16``,
    one at a time on a whole GPU; epoch time of each (epochs after the first) and the ratio.
    Target: autocast ran (bf16's losses differ from fp32's) and bf16's epoch is faster.
(d) nccl data parallelism: a data-parallel probe trial (``ddp_probe`` below: an MLP trained
    with DistributedDataParallel on generated data, reporting the backend its ranks see) with
    ``workers: 2``, one GPU per worker. expgrid runs Ray Train only for ``workers`` > 1, and nccl
    refuses two ranks on one GPU (Ray issue 48012), so on a one-GPU machine that trial cannot run;
    the check then runs the same probe as a one-worker Ray Train ``TorchTrainer`` (use_gpu, the
    way cluster/train_run.py builds it) outside expgrid and says so. Target: a trial through
    expgrid that completed with backend nccl.

Each figure gets one line, then one PASS/FAIL line per target; exit 0 when all pass, 1 when one
fails, 2 when CUDA is missing (without ``--cpu-dry-run``).

``--cpu-dry-run`` runs the same studies with tiny sizes on the CPU: GPUs are declared to the
local Ray (``num_gpus``; ``expgrid run`` has no ``--num-gpus`` option, so a small driver starts
expgrid's own local Ray with them and then calls ``expgrid run``'s entry point), ``gpu: auto``
sees a cluster without GPUs (its measurement needs CUDA), ``amp`` is a no-op on the CPU (as
classify documents) and the data-parallel ranks use gloo. Its figures mean nothing; it checks
that every part runs and is read back (exit 1 when one does not).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/gpu_check.py` from anywhere: expgrid from this checkout
    sys.path.insert(0, str(REPO))

from expgrid import records  # noqa: E402  (light: no ray, mlflow or torch)

DEADLINE_S = 420  # the whole check on a GPU: under 8 minutes (a run stopped at it takes up to 40 s more)
PACK_TARGET = 6.0  # packed / one-at-a-time throughput
HEADROOM = 0.15  # cluster/gpu.py's: share of GPU memory gpu: auto leaves free
PROBE_TRAINABLE = "bench.gpu_check:ddp_probe"


# ---------------------------------------------------------------------------------------------
# Sizes


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Per-trial work of each part. GPU: about 5 minutes in all on one H200-class GPU."""

    mlp_train: int
    mlp_val: int
    mlp_epochs: int
    mlp_batch: int
    cnn_train: int  # resnet20 on 32×32: gpu: auto's second trial
    cnn_batch: int
    amp_train: int
    amp_val: int
    amp_epochs: int
    amp_batch: int
    ddp_train: int
    ddp_epochs: int
    cpu: float  # per trial (and per data-parallel worker)
    timeout_s: int  # the longest any one run may take (the packing run; the others get a third)


GPU_SIZES = Sizes(mlp_train=30_000, mlp_val=2_000, mlp_epochs=4, mlp_batch=32, cnn_train=10_000, cnn_batch=256,
                  amp_train=50_000, amp_val=2_000, amp_epochs=4, amp_batch=512, ddp_train=20_000, ddp_epochs=3,
                  cpu=1.0, timeout_s=300)  # fmt: skip
DRY_SIZES = Sizes(mlp_train=512, mlp_val=128, mlp_epochs=2, mlp_batch=32, cnn_train=128, cnn_batch=32,
                  amp_train=256, amp_val=64, amp_epochs=2, amp_batch=64, ddp_train=512, ddp_epochs=2,
                  cpu=0.25, timeout_s=3600)  # fmt: skip
QUICK_SIZES = dataclasses.replace(DRY_SIZES, mlp_train=128, mlp_val=64, mlp_epochs=1, cnn_train=64, amp_train=64,
                                  amp_val=32, amp_batch=32, ddp_train=128, ddp_epochs=1)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Study files


def _head(name: str, trainable: str = "classify") -> str:
    return f"study: {name}\ntrainable: {trainable}\nmetric: val_accuracy\nmode: max\nseed: 0\n"


def _mlp_defaults(s: Sizes, epochs: int) -> str:
    return textwrap.dedent(f"""\
        defaults:
          dataset: {{name: synthetic, shape: [1, 28, 28], num_classes: 10, train_size: {s.mlp_train}, val_size: {s.mlp_val}}}
          model: {{name: mlp}}
          optimizer: {{name: adam, lr: 1.0e-3}}
          batch_size: {s.mlp_batch}
          epochs: {epochs}
          threads: 1
        """)  # fmt: skip


def _resnet20(train: int, val: int, batch: int) -> str:
    return (f"{{model.name: resnet20, dataset.shape: [3, 32, 32], dataset.train_size: {train}, "
            f"dataset.val_size: {val}, batch_size: {batch}}}")  # fmt: skip


def packing_study(s: Sizes) -> str:
    """(a) and (c): they need GPUs (declared ones in a dry run)."""
    seeds = list(range(8))
    return _head("gpucheck-packing") + _mlp_defaults(s, s.mlp_epochs) + textwrap.dedent(f"""\
        sections:
          - id: packed
            name: 8 trials at gpu 0.125
            inherit: none
            grid: {{seed: {seeds}}}
            resources: {{cpu: {s.cpu}, gpu: 0.125}}
          - id: alone
            name: the same 8 at gpu 1
            inherit: none
            grid: {{seed: {seeds}}}
            resources: {{cpu: {s.cpu}, gpu: 1}}
            max_concurrent: 1
          - id: amp
            name: resnet20 with and without bf16 autocast
            inherit: none
            grid: {{amp: [false, bfloat16]}}
            fixed: {_resnet20(s.amp_train, s.amp_val, s.amp_batch)}
            epochs: {s.amp_epochs}
            resources: {{cpu: {s.cpu}, gpu: 1}}
            max_concurrent: 1
        """)  # fmt: skip


def auto_study(s: Sizes) -> str:
    """(b): ``gpu: auto`` for the packing section's MLP trial and for a resnet20 trial."""
    return _head("gpucheck-auto") + _mlp_defaults(s, 1) + textwrap.dedent(f"""\
        resources: {{cpu: {s.cpu}, gpu: auto}}
        sections:
          - id: auto_mlp
            name: gpu auto, the MLP trial of (a)
            inherit: none
            grid: {{seed: [0, 1]}}
          - id: auto_cnn
            name: gpu auto, resnet20
            inherit: none
            grid: {{seed: [0, 1]}}
            fixed: {_resnet20(s.cnn_train, s.mlp_val, s.cnn_batch)}
        """)  # fmt: skip


def ddp_study(s: Sizes, gpu_per_worker: float) -> str:
    """(d): one data-parallel probe trial of 2 workers."""
    return _head("gpucheck-ddp", PROBE_TRAINABLE) + textwrap.dedent(f"""\
        defaults: {{train_size: {s.ddp_train}, epochs: {s.ddp_epochs}, workers: 2}}
        resources: {{cpu: {s.cpu}, gpu: {gpu_per_worker}}}
        sections:
          - id: ddp
            name: 2-worker data-parallel probe
            grid: {{seed: [0]}}
        """)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Running expgrid


@dataclasses.dataclass
class Run:
    results: Path
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False

    def failure(self) -> str:
        if self.timed_out:
            return f"expgrid run timed out after {self.seconds:.0f} s"
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        return f"expgrid run exited {self.rc}: {lines[-1] if lines else '(no stderr)'}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def run_expgrid(study: Path, results: Path, timeout_s: int, declared: tuple[int, int] | None,
                extra: tuple[str, ...] = ()) -> Run:  # fmt: skip
    """``expgrid run STUDY --results RESULTS [EXTRA…]`` in a new process, from the repository root.

    ``declared``: (CPUs, GPUs) to declare to the local Ray (dry run), through ``_drive_declared``."""
    args = ["run", str(study), "--results", str(results), *extra]
    if declared is None:
        command = [sys.executable, "-m", "expgrid", *args]
    else:
        snippet = "import sys; from bench.gpu_check import _drive_declared; sys.exit(_drive_declared(sys.argv[1:]))"
        command = [sys.executable, "-c", snippet, str(declared[0]), str(declared[1]), *args]
    return Run(results, *run_process(command, timeout_s))


def run_process(command: list[str], timeout_s: int) -> tuple[int, str, str, float, bool]:
    """Run ``command`` from the repository root: exit code, stdout, stderr, seconds, timed out."""
    began = time.perf_counter()
    # A session of its own, so that a run past its time is stopped with its Ray and nothing else.
    proc = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err, time.perf_counter() - began, False
    except subprocess.TimeoutExpired:
        out, err = _stop(proc)
        return proc.returncode or 124, out, err, time.perf_counter() - began, True


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGINT (expgrid stops cleanly and shuts its Ray down), then SIGKILL of its session."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.communicate()


def _drive_declared(argv: list[str]) -> int:
    """``expgrid run`` on a local Ray with declared CPUs and GPUs (``argv``: CPUs, GPUs, then the
    command's arguments): expgrid's own local Ray (cluster.connect, loopback, token auth), which
    the run then uses as it is, as it uses any session already connected."""
    from cluster import connect

    num_cpus, num_gpus, rest = int(argv[0]), int(argv[1]), argv[2:]
    connect.connect(None, num_cpus, num_gpus)
    from expgrid.cli import main

    try:
        return main(rest)
    finally:
        connect.shutdown()


# ---------------------------------------------------------------------------------------------
# Reading results


def section(run: Run, sid: str) -> tuple[dict[str, Any] | None, list[records.TrialRecord]]:
    saved = records.read_section(run.results, sid)
    trials = records.read_trials(run.results, sid) if saved is not None else []
    return saved, trials


def peak_concurrency(trials: list[records.TrialRecord]) -> int:
    events = sorted([(t.started, 1) for t in trials if t.started is not None]
                    + [(t.ended, -1) for t in trials if t.ended is not None])  # fmt: skip
    running = peak = 0
    for _, step in events:  # an end sorts before a start at the same instant (-1 < 1)
        running += step
        peak = max(peak, running)
    return peak


def steady_epoch_seconds(trial: records.TrialRecord) -> float:
    """Mean epoch wall time after the first epoch (CUDA and cuDNN warm up in it); the first when
    there is only one."""
    rows = trial.history[1:] or trial.history
    return statistics.fmean(float(r["seconds"]) for r in rows)


AUTO_MEASURED = re.compile(
    r"gpu: auto — peak (\d+) MiB of (\d+) MiB per trial → (\d+) trials per GPU \(gpu ([0-9.e+-]+) each\)"
)
AUTO_NO_GPU = re.compile(r"gpu: auto — this cluster has no GPU")


def auto_lines(stdout: str) -> list[dict[str, Any]]:
    """What ``gpu: auto`` printed (cluster/gpu.py ``resolve``), one entry per section, in order."""
    found = []
    for m in re.finditer(f"{AUTO_MEASURED.pattern}|{AUTO_NO_GPU.pattern}", stdout):
        if m.group(1) is None:
            found.append({"gpu": False})
        else:
            found.append({"gpu": True, "peak_mib": int(m.group(1)), "total_mib": int(m.group(2)),
                          "per_gpu": int(m.group(3)), "share": float(m.group(4))})  # fmt: skip
    return found


# ---------------------------------------------------------------------------------------------
# The parts


@dataclasses.dataclass
class Verdict:
    part: str
    target: str
    ok: bool
    detail: str
    judged: bool = True  # False in a dry run: the figure means nothing there, only that it ran


@dataclasses.dataclass
class Check:
    dry: bool
    sizes: Sizes
    out: Path
    gpus: int  # real GPUs (0 in a dry run)
    cpus: int
    deadline: float = math.inf  # time.monotonic() by which the whole check ends
    lines: list[str] = dataclasses.field(default_factory=list)
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def verdict(self, part: str, target: str, ok: bool, detail: str, *, structural: bool = False) -> None:
        self.verdicts.append(Verdict(part, target, ok, detail, judged=structural or not self.dry))

    def timeout(self, longest: bool) -> int:
        """Seconds the next run may take: its own limit, within what is left of the check's."""
        own = self.sizes.timeout_s if longest else self.sizes.timeout_s // 3
        return int(max(10, min(own, self.deadline - time.monotonic())))

    def study(self, name: str, text: str) -> Path:
        path = self.out / f"{name}.yaml"
        path.write_text(text)
        return path

    def expgrid(self, name: str, text: str, declared_gpus: int, extra: tuple[str, ...] = ()) -> Run:
        run = run_expgrid(self.study(name, text), self.out / f"results-{name}", self.timeout(name == "packing"),
                          (self.cpus, declared_gpus) if self.dry else None, extra)  # fmt: skip
        (self.out / f"{name}.stdout.txt").write_text(run.stdout)
        (self.out / f"{name}.stderr.txt").write_text(run.stderr)
        print(f"    (expgrid run {name}: exit {run.rc}, {run.seconds:.1f} s)", flush=True)
        return run


def part_packing_and_amp(check: Check, parts: set[str]) -> None:
    sections = ["packed", "alone"] * ("a" in parts) + ["amp"] * ("c" in parts)
    run = check.expgrid(
        "packing", packing_study(check.sizes), declared_gpus=1, extra=("--sections", ",".join(sections))
    )
    if "a" in parts:
        _packing(check, run)
    if "c" in parts:
        _amp(check, run)


def _packing(check: Check, run: Run) -> None:
    target = f"(a) 8 trials at gpu 0.125 vs one at a time at gpu 1: throughput ≥ {PACK_TARGET:g}×"
    packed, packed_trials = section(run, "packed")
    alone, alone_trials = section(run, "alone")
    if packed is None or alone is None:
        check.verdict("a", target, False, run.failure(), structural=True)
        return
    done = [t for t in packed_trials + alone_trials if t.status == "completed"]
    fast, slow = 8 / packed["seconds"], 8 / alone["seconds"]
    ratio = fast / slow
    peaks = peak_concurrency(packed_trials), peak_concurrency(alone_trials)
    shares = packed["resources"].get("gpu"), alone["resources"].get("gpu")
    check.say(f"(a) packing: 8 trials at gpu {shares[0]:g}: {packed['seconds']:.1f} s ({fast:.3f} trials/s, up to "
              f"{peaks[0]} at once); at gpu {shares[1]:g}: {alone['seconds']:.1f} s ({slow:.3f} trials/s, up to "
              f"{peaks[1]} at once) → {ratio:.2f}× (target ≥ {PACK_TARGET:g}×)")  # fmt: skip
    epoch_packed = statistics.median(steady_epoch_seconds(t) for t in packed_trials)
    epoch_alone = statistics.median(steady_epoch_seconds(t) for t in alone_trials)
    check.say(f"(a) one MLP epoch ({check.sizes.mlp_train} images, batch {check.sizes.mlp_batch}): median "
              f"{epoch_packed:.2f} s with 8 on the GPU, {epoch_alone:.2f} s alone ({epoch_packed / epoch_alone:.2f}×)")  # fmt: skip
    ran = len(done) == 16 and peaks[0] > 1 and peaks[1] == 1 and shares == (0.125, 1.0)
    check.verdict("a", "(a) packing ran: 16 trials completed, packed ones together, the others one at a time", ran,
                  f"{len(done)} of 16 completed, up to {peaks[0]} / {peaks[1]} at once, gpu {shares[0]} / {shares[1]}",
                  structural=True)  # fmt: skip
    check.verdict("a", target, ran and ratio >= PACK_TARGET, f"{ratio:.2f}×")


def _amp(check: Check, run: Run) -> None:
    target = "(c) AMP bf16 on resnet20: autocast ran (its losses differ from fp32's) and its epoch is faster"
    saved, trials = section(run, "amp")
    if saved is None:
        check.verdict("c", target, False, run.failure(), structural=True)
        return
    by_amp = {str(t.config.get("amp")).lower(): t for t in trials}
    fp32, bf16 = by_amp.get("false"), by_amp.get("bfloat16")
    if fp32 is None or bf16 is None or fp32.status != "completed" or bf16.status != "completed":
        check.verdict("c", target, False, f"trials: {[(t.config.get('amp'), t.status, t.error) for t in trials]}",
                      structural=True)  # fmt: skip
        return
    t32, t16 = steady_epoch_seconds(fp32), steady_epoch_seconds(bf16)
    changed = [r["train_loss"] for r in fp32.history] != [r["train_loss"] for r in bf16.history]
    check.say(f"(c) AMP, resnet20 batch {check.sizes.amp_batch} on {check.sizes.amp_train} 32×32 images: epoch "
              f"{t32:.2f} s fp32, {t16:.2f} s bf16 → bf16/fp32 {t16 / t32:.2f}; losses "
              f"{'differ (autocast ran)' if changed else 'identical (no autocast)'}; val_accuracy "
              f"{fp32.history[-1]['val_accuracy']:.3f} / {bf16.history[-1]['val_accuracy']:.3f}")  # fmt: skip
    if check.dry:  # classify's amp is a no-op on the CPU: identical numbers are what is expected
        check.verdict("c", "(c) AMP ran both ways (on the CPU amp is a no-op: identical losses)", not changed,
                      "identical" if not changed else "losses differ on the CPU", structural=True)  # fmt: skip
    check.verdict(
        "c", target, changed and t16 < t32, f"bf16/fp32 {t16 / t32:.2f}, losses {'differ' if changed else 'identical'}"
    )


def part_auto(check: Check) -> None:
    # A dry run declares no GPU here: gpu: auto's measurement needs CUDA (torch.cuda memory stats).
    run = check.expgrid("auto", auto_study(check.sizes), declared_gpus=0)
    target = "gpu: auto measured a peak and chose a GPU share in (0, 1] that fits; its trials completed"
    printed = auto_lines(run.stdout)
    names = {"auto_mlp": f"the MLP of (a), batch {check.sizes.mlp_batch}",
             "auto_cnn": f"resnet20, batch {check.sizes.cnn_batch}"}  # fmt: skip
    for i, (sid, what) in enumerate(names.items()):
        saved, trials = section(run, sid)
        line = printed[i] if i < len(printed) else None
        if saved is None or line is None:
            detail = run.failure() if saved is None else "no `gpu: auto` line printed"
            check.verdict("b", f"(b) {sid}: {target}", False, detail, structural=True)
            continue
        recorded = float(saved["resources"].get("gpu", 0.0))
        completed = sum(t.status == "completed" for t in trials)
        if not line["gpu"]:
            check.say(f"(b) gpu: auto, {what}: no GPU in the cluster → CPU trials (recorded gpu {recorded:g}); "
                      f"{completed} of {len(trials)} completed")  # fmt: skip
            if check.dry:
                check.verdict("b", f"(b) {sid}: gpu: auto's CPU fallback ran and was recorded",
                              recorded == 0.0 and completed == len(trials),
                              f"recorded gpu {recorded:g}, {completed} of {len(trials)} completed", structural=True)  # fmt: skip
            else:
                check.verdict("b", f"(b) {sid}: {target}", False, "gpu: auto saw no GPU in the cluster")
            continue
        fits = line["share"] > 0 and line["per_gpu"] * line["peak_mib"] <= (1 - HEADROOM) * line["total_mib"] + 1
        check.say(f"(b) gpu: auto, {what}: peak {line['peak_mib']} MiB of {line['total_mib']} MiB → "
                  f"{line['per_gpu']} trials per GPU, gpu {line['share']:g} each (recorded gpu {recorded:g}); "
                  f"{completed} of {len(trials)} completed")  # fmt: skip
        why = "" if line["share"] > 0 else (" — a share of 0 reserves no GPU: cluster/gpu.py rounds 1/n down to "
                                             "1/1000, so more than 1000 trials per GPU become gpu 0")  # fmt: skip
        check.verdict("b", f"(b) {sid}: {target}", fits and recorded == line["share"] and completed == len(trials),
                      f"peak {line['peak_mib']} MiB, gpu {line['share']:g}, {completed} of {len(trials)} completed{why}")  # fmt: skip


def part_ddp(check: Check) -> None:
    target = "(d) a data-parallel trial through expgrid completed with backend nccl"
    want = "gloo" if check.dry else "nccl"
    if check.dry or check.gpus >= 2:
        gpu = 0.0 if check.dry else 1.0
        run = check.expgrid("ddp", ddp_study(check.sizes, gpu), declared_gpus=0)
        saved, trials = section(run, "ddp")
        trial = trials[0] if trials else None
        if saved is None or trial is None or trial.status != "completed":
            detail = run.failure() if trial is None else f"trial {trial.status}: {trial.error}"
            check.verdict("d", target, False, detail, structural=True)
        else:
            facts = _probe_facts(run.results, trial)
            check.say(f"(d) data-parallel through expgrid: {facts['world_size']} workers, backend {facts['backend']} "
                      f"on {facts['device']}, val_accuracy {trial.history[-1]['val_accuracy']:.3f} "
                      f"({trial.last_epoch} epochs)")  # fmt: skip
            check.verdict("d", target.replace("nccl", want) if check.dry else target,
                          facts["backend"] == want and facts["world_size"] == 2,
                          f"backend {facts['backend']}, world size {facts['world_size']}", structural=check.dry)  # fmt: skip
    else:
        check.say("(d) data-parallel through expgrid: not run — one GPU: expgrid runs Ray Train only for workers > 1, "
                  "and nccl refuses two ranks on one GPU")  # fmt: skip
        check.verdict("d", target, False, "needs 2 GPUs, or an expgrid option for a one-worker Ray Train trial")
    if check.dry or check.gpus == 1:
        facts = run_train_probe(check)
        if facts is None:
            check.verdict("d", f"(d) one-worker Ray Train TorchTrainer ({want}) ran", False,
                          "see train_probe.stderr.txt", structural=True)  # fmt: skip
            return
        check.say(f"(d) one-worker Ray Train TorchTrainer (outside expgrid): backend {facts['backend']} on "
                  f"{facts['device']}, world size {facts['world_size']}, val_accuracy {facts['val_accuracy']:.3f}")  # fmt: skip
        check.verdict("d", f"(d) one-worker Ray Train TorchTrainer ran with backend {want}",
                      facts["backend"] == want, f"backend {facts['backend']}", structural=True)  # fmt: skip


def _probe_facts(results: Path, trial: records.TrialRecord) -> dict[str, Any]:
    path = records.trial_dir(results, "ddp", trial.index) / "backend.json"
    if path.exists():
        return json.loads(path.read_text())
    row = trial.history[-1]
    return {"backend": "nccl" if row.get("nccl") else "?", "device": "?", "world_size": int(row.get("world_size", 0))}


def run_train_probe(check: Check) -> dict[str, Any] | None:
    """The probe as a one-worker TorchTrainer in a process of its own; its facts, or None."""
    out = check.out / "train_probe.json"
    out.unlink(missing_ok=True)
    snippet = "import sys; from bench.gpu_check import _train_probe_main; _train_probe_main(sys.argv[1:])"
    command = [sys.executable, "-c", snippet, str(out), str(check.sizes.ddp_train), str(check.sizes.ddp_epochs),
               "0" if check.dry else "1", str(check.cpus)]  # fmt: skip
    rc, stdout, stderr, seconds, timed_out = run_process(command, check.timeout(False))
    (check.out / "train_probe.stdout.txt").write_text(stdout)
    (check.out / "train_probe.stderr.txt").write_text(
        stderr + (f"\ntimed out after {seconds:.0f} s\n" if timed_out else "")
    )
    print(f"    (Ray Train probe: exit {rc}, {seconds:.1f} s)", flush=True)
    return json.loads(out.read_text()) if rc == 0 and out.exists() else None


# ---------------------------------------------------------------------------------------------
# The data-parallel probe (runs in trial processes and Ray Train workers)


def ddp_probe(config: dict[str, Any]) -> None:
    """expgrid trainable: ``_probe_rank`` on ``config["workers"]`` processes (expgrid.data_parallel)."""
    import expgrid

    expgrid.data_parallel(_probe_rank, config)


def _probe_rank(config: dict[str, Any]) -> dict[str, Any]:
    """Train a 784-128-10 MLP with DistributedDataParallel on generated 28×28 images (each rank
    its share of every epoch), report val_accuracy every epoch and, as the file backend.json,
    the process group's backend, device and size and the CUDA devices the process sees; return
    those facts. ``sleep``: seconds added to each epoch (so that tests see trials overlap)."""
    import torch
    import torch.distributed as dist
    from torch import nn

    import expgrid
    from trainables.classification.synthetic import synthetic_pool

    group = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if group else (0, 1)
    if group:
        import ray.train.torch

        device = ray.train.torch.get_device()  # the GPU Ray Train gave this worker, or the CPU
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_train, n_val = int(config.get("train_size", 2000)), 1000
    x, y = synthetic_pool(n_train + n_val, (1, 28, 28), 10, int(config.get("seed", 0)))
    x, y = torch.from_numpy(x).flatten(1).to(device), torch.from_numpy(y).to(device)
    x_train, y_train, x_val, y_val = x[:n_train][rank::world], y[:n_train][rank::world], x[n_train:], y[n_train:]
    torch.manual_seed(int(config.get("seed", 0)))  # the same initial weights on every rank
    model: nn.Module = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)).to(device)
    if group:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    facts = {"backend": str(dist.get_backend()) if group else "none", "device": str(device), "world_size": world,
             "cuda": torch.cuda.is_available(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}  # fmt: skip
    for epoch in range(1, int(config.get("epochs", 1)) + 1):
        for i in range(0, len(x_train), 64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x_train[i : i + 64]), y_train[i : i + 64]).backward()
            optimizer.step()
        time.sleep(float(config.get("sleep", 0.0)))
        with torch.no_grad():
            right = (model(x_val).argmax(1) == y_val).sum().float()
        if group:  # every rank's count, summed over the group's backend (a real collective)
            dist.all_reduce(right)
        facts["val_accuracy"] = float(right) / (n_val * world)
        expgrid.report({"epoch": epoch, "val_accuracy": facts["val_accuracy"], "world_size": world,
                        "nccl": float(facts["backend"] == "nccl")},
                       artifacts=lambda: {"backend.json": dict(facts)})  # fmt: skip
    return facts


def _train_probe_main(argv: list[str]) -> None:
    """``_probe_rank`` as a one-worker Ray Train TorchTrainer on expgrid's own local Ray;
    argv: output JSON path, train size, epochs, use_gpu (0/1), CPUs."""
    out, train_size, epochs, use_gpu, cpus = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3] == "1", int(argv[4])
    from cluster import connect

    connect.connect(None, cpus, None)
    try:
        import ray.train
        from ray.train.torch import TorchTrainer

        import expgrid.reporter as reporter

        def loop(config: dict[str, Any]) -> None:
            with reporter.active(reporter.LocalSession()):
                facts = _probe_rank(config)
            # A file, not the Result: Train V2 keeps metrics only with checkpoints (result.metrics
            # was None). One node, one worker: the path is this machine's.
            Path(config["facts_path"]).write_text(json.dumps(facts))
            ray.train.report({"val_accuracy": facts["val_accuracy"]})

        with tempfile.TemporaryDirectory(prefix="gpucheck-train-") as storage:
            result = TorchTrainer(
                loop,
                train_loop_config={"train_size": train_size, "epochs": epochs, "seed": 0, "facts_path": str(out)},
                scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu,
                                                       resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
                run_config=ray.train.RunConfig(name="gpucheck-train-probe", storage_path=storage),
            ).fit()  # fmt: skip
        if result.error is not None:
            raise result.error
    finally:
        connect.shutdown()


# ---------------------------------------------------------------------------------------------
# Main


def gpu_facts() -> dict[str, Any]:
    """CUDA's view of this machine, from a short process of its own (this one never touches CUDA)."""
    snippet = ("import json, torch; ok = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) if ok "
               "else None; print(json.dumps({'cuda': ok, 'count': torch.cuda.device_count() if ok else 0, "
               "'name': p.name if ok else None, 'gib': p.total_memory / 2**30 if ok else 0, "
               "'torch': torch.__version__, 'cuda_version': torch.version.cuda, "
               "'bf16': ok and torch.cuda.is_bf16_supported()}))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, env=_env(), timeout=120)
    if proc.returncode != 0:
        return {"cuda": False, "count": 0, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cpu-dry-run",
        action="store_true",
        help="run the same code paths with tiny sizes on the CPU (declared GPUs, gloo)",
    )
    parser.add_argument("--quick", action="store_true", help="with --cpu-dry-run: smaller still (for the test suite)")
    parser.add_argument("--parts", default="a,b,c,d", help="which parts to run, e.g. a,c (default: a,b,c,d)")
    parser.add_argument(
        "--out", type=Path, help="folder for the study files and results (default: a new temporary one)"
    )
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - set("abcd"):
        parser.exit(2, f"error: --parts: expected a comma-separated subset of a,b,c,d, got {args.parts!r}\n")
    if args.quick and not args.cpu_dry_run:
        parser.exit(2, "error: --quick: expected together with --cpu-dry-run, got it alone\n")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    cpus = os.cpu_count() or 1
    if args.cpu_dry_run:
        facts = {"cuda": False, "count": 0}
        sizes = QUICK_SIZES if args.quick else DRY_SIZES
        cpus = min(cpus, 2)  # what the declared resources are sized for (cpu 0.25 per trial: 8 at once)
    else:
        facts = gpu_facts()
        if not facts["cuda"]:
            print("error: CUDA: expected a CUDA GPU (torch.cuda.is_available()), got none; "
                  "run with --cpu-dry-run to exercise the check on the CPU", file=sys.stderr)  # fmt: skip
            return 2
        sizes = GPU_SIZES
    out = args.out or Path(tempfile.mkdtemp(prefix="gpucheck-"))
    out.mkdir(parents=True, exist_ok=True)
    check = Check(
        dry=args.cpu_dry_run,
        sizes=sizes,
        out=out.resolve(),
        gpus=facts["count"],
        cpus=cpus,
        deadline=time.monotonic() + (math.inf if args.cpu_dry_run else DEADLINE_S - (time.perf_counter() - began)),
    )
    if check.dry:
        check.say(f"expgrid GPU check — CPU DRY RUN{' (quick)' if args.quick else ''}: declared GPUs, gloo, tiny "
                  f"sizes; the figures mean nothing, only that every part runs and is read back ({cpus} CPUs)")  # fmt: skip
    else:
        check.say(f"expgrid GPU check — {facts['count']} × {facts['name']} ({facts['gib']:.1f} GiB), torch "
                  f"{facts['torch']}, CUDA {facts['cuda_version']}, bf16 {'yes' if facts['bf16'] else 'no'}, {cpus} CPUs")  # fmt: skip
    check.say(f"    files: {check.out}")
    if args.parts & {"a", "c"}:
        part_packing_and_amp(check, args.parts)
    if "b" in args.parts:
        part_auto(check)
    if "d" in args.parts:
        part_ddp(check)
    wall = time.perf_counter() - began
    check.say(f"wall time: {wall:.0f} s{'' if check.dry else ' (target: under 480 s)'}")
    failed = False
    for v in check.verdicts:
        if v.judged:
            failed = failed or not v.ok
            check.say(f"{'PASS' if v.ok else 'FAIL'} {v.target}: {v.detail}")
        else:
            check.say(f"(not judged in a dry run) {v.target}: {v.detail}")
    (check.out / "summary.txt").write_text("\n".join(check.lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
