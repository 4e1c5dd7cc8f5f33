"""Data through Ray's object store, on the test session's real local Ray: a section whose data is
above Ray's function-size limit runs; a section sweeping a data option gives each trial its own
data, fetched once per worker process; a data-parallel trial hands its workers the same object
reference; and an image corrupted after validation fails its trial with an error naming it.

The trainable (tests/reliability/data_probe.py) generates its data in ``load_data`` and reports
what each trial was given."""

from __future__ import annotations

import io
import json
import textwrap

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from expgrid.errors import StudyFailed
from expgrid.runner import RunOptions, prepare, run_study


@pytest.fixture
def probe(tmp_path):
    """Writes a study file of the data-probe trainable (tests/reliability/data_probe.py)."""

    def write(body: str) -> object:
        path = tmp_path / "study.yaml"
        path.write_text(
            "trainable: tests.reliability.data_probe:train\nmetric: score\nmode: max\n" + textwrap.dedent(body)
        )
        return path

    return write


def _expected_checksum(mb: int, seed: int) -> int:
    x = np.random.default_rng(seed).integers(0, 256, mb * 2**20, dtype=np.uint8)
    return int(x[::4099].sum())


def _run(path, tmp_path):
    study, spec = prepare(path)
    stream = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=tmp_path / "results", stream=stream))
    return outcome, stream.getvalue()


def test_a_section_whose_data_is_above_rays_function_size_limit_runs(ray_session, probe, tmp_path):
    # 150 MiB: Ray refuses an actor class above 95 MiB (FUNCTION_SIZE_ERROR_THRESHOLD); before, the
    # data rode inside Tune's ImplicitFunc and the section ended "The actor ImplicitFunc is too large".
    path = probe("""
        study: big-data
        defaults: {dataset: {mb: 150, seed: 7}}
        max_concurrent: 1
        sections:
          - {id: "1", grid: {x: [1, 2]}}
    """)
    outcome, text = _run(path, tmp_path)
    trials = outcome.sections[0].trials
    assert [t.status for t in trials] == ["completed", "completed"], [t.error for t in trials]
    want = _expected_checksum(150, 7)
    for trial in trials:
        row = trial.history[-1]
        assert (row["seed_seen"], row["checksum"], row["mib"]) == (7, want, 150.0)
        assert row["numpy_read_only"] == 1  # a view of the object store's shared memory, not a copy
        assert row["torch_sum"] == 499500.0
    print(f"\n150 MiB section: {[t.history[-1]['pid'] for t in trials]} worker pids, "
          f"{outcome.sections[0].seconds:.1f} s")  # fmt: skip

    # What Ray pickles per actor class for such a section: only object references, whatever the data.
    import ray.cloudpickle
    from ray.tune.trainable.function_trainable import wrap_function

    from cluster import trial_side, tune_section

    ref = trial_side.share(np.zeros(150 * 2**20, dtype=np.uint8))
    section = tune_section.TuneSection(name="s", storage_path=str(tmp_path), trials=[], resources={"cpu": 1.0, "gpu": 0.0},
                                       shared={"data0": ref})  # fmt: skip
    pickled = len(ray.cloudpickle.dumps(wrap_function(tune_section._tune_trainable(section))))
    print(f"pickled trial class with 150 MiB of shared data: {pickled} bytes")
    # References only (about 5 KB): far below the 10 MB above which Ray 2.60 warns that a
    # function is large, and the 95 MiB above which it refuses it.
    assert pickled < 2**20


def test_a_section_sweeping_a_data_option_gives_each_trial_its_own_data_once_per_process(ray_session, probe, tmp_path):
    # Two datasets of 60 MiB: each below Ray's limit, both together above it (as a grid over
    # dataset.preload_mb was). 16 trials at one at a time run in packs of 4 (one process each);
    # the seeds alternate, so every pack meets both datasets.
    path = probe("""
        study: data-sweep
        defaults: {dataset: {mb: 60}}
        max_concurrent: 1
        sections:
          - {id: "1", grid: {x: [1, 2, 3, 4, 5, 6, 7, 8], dataset.seed: [3, 4]}}
    """)
    outcome, _ = _run(path, tmp_path)
    trials = outcome.sections[0].trials
    assert len(trials) == 16 and all(t.status == "completed" for t in trials), [t.error for t in trials]
    want = {seed: _expected_checksum(60, seed) for seed in (3, 4)}
    for trial in trials:
        row, seed = trial.history[-1], trial.config["dataset"]["seed"]
        assert (row["seed_seen"], row["checksum"]) == (seed, want[seed]), trial.index
    rows = [t.history[-1] for t in trials]
    for first in range(0, 16, 4):  # a pack: one worker process, each dataset fetched once in it
        pack = rows[first : first + 4]
        assert len({r["pid"] for r in pack}) == 1, pack
        for seed in (3, 4):
            assert len({r["data_id"] for r in pack if r["seed_seen"] == seed}) == 1, (seed, pack)
        assert len({r["data_id"] for r in pack}) == 2


def test_a_data_parallel_trial_hands_its_workers_the_trials_object_reference(ray_session, probe, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    path = probe(f"""
        study: data-ddp
        defaults: {{dataset: {{mb: 2, seed: 5}}, workers: 2, out: {out}}}
        resources: {{cpu: 1}}
        sections:
          - {{id: "1", grid: {{x: [1]}}}}
    """)
    outcome, _ = _run(path, tmp_path)
    (trial,) = outcome.sections[0].trials
    assert trial.status == "completed", trial.error
    (trial_ref,) = json.loads((out / "trial.json").read_text())["fetched"]
    for rank in (0, 1):
        seen = json.loads((out / f"rank{rank}.json").read_text())
        assert seen["fetched"] == [trial_ref]  # the same object, not a second ray.put
        assert (seen["seed_seen"], seen["checksum"], seen["numpy_read_only"]) == (5, _expected_checksum(2, 5), 1)


def test_an_image_corrupted_after_validation_fails_its_trial_naming_the_file(ray_session, tmp_path):
    from PIL import Image

    from trainables.classification.synthetic import write_fake_image_folder

    root = write_fake_image_folder(tmp_path / "images", 2, 4, 16)
    png = sorted((root / "train" / "class_01").iterdir())[1]
    victim = png.with_suffix(".jpg")  # a JPEG: PIL's header check does not read a JPEG's pixel data
    with Image.open(png) as image:
        image.save(victim, quality=95)
    png.unlink()
    path = tmp_path / "study.yaml"
    path.write_text(
        textwrap.dedent(f"""
        study: corrupt-image
        trainable: classify
        metric: val_accuracy
        defaults:
          dataset: {{name: image_folder, root: {root}, train_size: null, val_size: null, image_size: 8, loader_workers: 1}}
          model: {{name: mlp, hidden: [8]}}
          epochs: 1
          batch_size: 4
        sections:
          - {{id: "1", grid: {{optimizer.lr: [0.01]}}}}
    """)
    )
    study, spec = prepare(path)  # validation reads every header: all fine
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # cut: its header still reads, its pixels do not
    with pytest.raises(StudyFailed) as info:
        run_study(study, spec, RunOptions(results_dir=tmp_path / "results", stream=io.StringIO()))
    (trial,) = json.loads((tmp_path / "results" / "sections" / "1" / "trials.json").read_text())
    assert trial["status"] == "failed"
    assert f"cannot decode image {victim}: " in trial["error"], trial["error"]
    assert f"cannot decode image {victim}" in str(info.value)  # the study's one line lists the errors
    client = MlflowClient(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("corrupt-image").experiment_id],
                                "tags.`expgrid.kind` = 'trial'")  # fmt: skip
    assert f"cannot decode image {victim}" in run.data.tags["expgrid.error"]


def test_a_packed_trials_error_from_a_dataloader_worker_is_its_one_line(tmp_path):
    # A pack records `error` itself (an unpacked trial's comes from Tune's error file, last line);
    # a DataLoader worker's error arrives with the worker's whole traceback in its message.
    from PIL import Image

    from cluster.trial_side import _error_line
    from trainables.classification.batches import make_splits
    from trainables.classification.data import load_dataset
    from trainables.classification.synthetic import write_fake_image_folder

    root = write_fake_image_folder(tmp_path / "images", 2, 2, 12)
    victim = root / "train" / "class_00" / "x.jpg"
    Image.fromarray(np.full((64, 64, 3), 7, dtype=np.uint8)).save(victim)
    data = victim.read_bytes()
    scan = data.index(b"\xff\xda")
    victim.write_bytes(data[: scan + (len(data) - scan) // 2])
    folder = load_dataset(
        {"name": "image_folder", "root": str(root), "train_size": None, "val_size": None, "image_size": 8}
    )
    with pytest.raises(OSError) as info:
        list(make_splits(folder, "cpu", loader_workers=1)["train"].epoch(4, shuffle=False))
    assert "Original Traceback" in str(info.value)
    line = _error_line(info.value)
    assert line.startswith(f"OSError: cannot decode image {victim}: image file is truncated") and "\n" not in line


def test_numpy_arrays_come_back_zero_copy_and_torch_tensors_as_copies(ray_session):
    # What `fetch` documents, as Ray 2.60 does it by default: a NumPy array fetched twice in one
    # process is the same shared memory (read-only); a torch tensor is unpickled into a new copy
    # each time (zero-copy only with RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1 in every process),
    # which is why the per-process cache matters for it.
    import torch

    from cluster import trial_side

    ref = trial_side.share({"x": np.arange(1 << 20, dtype=np.float32), "t": torch.arange(1 << 20, dtype=torch.float32)})

    @ray_session.remote
    def twice(refs):
        a, b = (ray_session.get(refs[0]) for _ in range(2))
        address = lambda array: array.__array_interface__["data"][0]  # noqa: E731
        cached = trial_side.fetch(refs[0]) is trial_side.fetch(refs[0])
        return (
            address(a["x"]) == address(b["x"]),
            a["x"].flags.writeable,
            a["t"].data_ptr() == b["t"].data_ptr(),
            cached,
        )

    same_numpy, writeable, same_torch, cached = ray_session.get(twice.remote([ref]))  # in a list: not resolved
    print(f"\nnumpy shared: {same_numpy} (writeable {writeable}); torch shared: {same_torch}; fetch cached: {cached}")
    assert (same_numpy, writeable, cached) == (True, False, True)
    assert not same_torch
