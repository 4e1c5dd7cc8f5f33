"""Data files checked before anything runs: a table of bad files → `expgrid validate` exits 2 with
one line naming the field that sets the path and the offending file, while `expgrid show` of the
same study exits 0 (it only plans); the checks' parts; and the loaders' error for an image they
cannot decode, which names the file. Generated data only, real files, no Ray."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from expgrid.cli import main
from expgrid.datacheck import check_study_data
from expgrid.errors import ConfigError
from expgrid.runner import prepare
from trainables.classification.synthetic import write_fake_cifar10, write_fake_fashion_mnist, write_fake_image_folder
from trainables.datafiles import npz_arrays, unreadable_image
from trainables.reid.synthetic import write_fake_veri

REPO = Path(__file__).resolve().parents[2]


def _study(tmp: Path, trainable: str, dataset: dict, grid: str = "{optimizer.lr: [0.01]}") -> Path:
    """A one-section study of ``trainable`` whose defaults set ``dataset``."""
    head = {
        "classify": "metric: val_accuracy\ndefaults:\n  model: {name: mlp, hidden: [8]}\n",
        "reid": "metric: mAP\ndefaults:\n  model: {pretrained: false}\n",
    }[trainable]
    path = tmp / "s.yaml"
    path.write_text(f"study: data-check\ntrainable: {trainable}\n{head}  dataset: {json.dumps(dataset)}\n"
                    f"  epochs: 1\nsections:\n  - {{id: '1', grid: {grid}}}\n")  # fmt: skip
    return path


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _pool(n: int, shape=(28, 28), labels: int | None = None) -> dict:
    rng = np.random.default_rng(0)
    return {"images": rng.integers(0, 256, (n, *shape), dtype=np.uint8), "labels": rng.integers(0, 10, labels or n)}


def _jpeg(path: Path, size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _folder(tmp: Path) -> Path:
    return write_fake_image_folder(tmp / "folder", ["cat", "dog"], 3, 12)


def _folder_cfg(root: Path, **extra) -> dict:
    return {"name": "image_folder", "root": str(root), "train_size": None, "val_size": None, "image_size": 8, **extra}


def _veri(tmp: Path) -> Path:
    return write_fake_veri(tmp / "veri", ids=4, cameras=2, images_per_camera=1, size=(16, 16))


# Each case: (trainable, make(tmp) -> (dataset mapping, offending file or folder), field, words in the message)


def missing_npz(tmp):
    return {"name": "fashion_mnist", "path": str(tmp / "none.npz")}, tmp / "none.npz"


def npz_with_wrong_arrays(tmp):
    path = _npz(tmp / "f.npz", a=np.zeros(3), b=np.zeros(3))
    return {"name": "fashion_mnist", "path": str(path), "train_size": 2, "val_size": 1}, path


def npz_with_mismatched_lengths(tmp):
    path = _npz(tmp / "f.npz", **_pool(100, labels=90))
    return {"name": "fashion_mnist", "path": str(path), "train_size": 50, "val_size": 20}, path


def npz_that_is_not_a_zip(tmp):
    path = tmp / "f.npz"
    path.write_text("images,labels\n")
    return {"name": "fashion_mnist", "path": str(path)}, path


def npz_with_float_labels(tmp):
    path = _npz(tmp / "f.npz", images=_pool(30)["images"], labels=np.zeros(30))
    return {"name": "fashion_mnist", "path": str(path), "train_size": 20, "val_size": 5}, path


def npz_with_labels_out_of_range(tmp):
    pool = _pool(30, (32, 32, 3))
    path = _npz(tmp / "c.npz", images=pool["images"], labels=np.arange(30) % 13)
    return {"name": "cifar10", "path": str(path), "train_size": 20, "val_size": 5}, path


def cifar_npz_of_grey_images(tmp):
    path = _npz(tmp / "c.npz", **_pool(30))
    return {"name": "cifar10", "path": str(path), "train_size": 20, "val_size": 5}, path


def npz_smaller_than_the_split(tmp):
    path = _npz(tmp / "f.npz", **_pool(30))
    return {"name": "fashion_mnist", "path": str(path), "train_size": 25, "val_size": 10}, path


def cifar_batch_folder_missing_a_file(tmp):
    root = write_fake_cifar10(tmp / "c", 20, 10)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    return {"name": "cifar10", "root": str(root), "train_size": 10, "val_size": 5}, root / "cifar-10-batches-py"


def cifar_batch_cut_short(tmp):
    root = write_fake_cifar10(tmp / "c", 20, 10)
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    return {"name": "cifar10", "root": str(root), "train_size": 10, "val_size": 5}, batch


def fashion_idx_cut_short(tmp):
    root = write_fake_fashion_mnist(tmp / "f", 20, 10)
    images = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    return {"name": "fashion_mnist", "root": str(root), "train_size": 10, "val_size": 5}, images


def zero_byte_jpeg_in_a_class_folder(tmp):
    root = _folder(tmp)
    bad = root / "train" / "dog" / "empty.jpg"
    bad.write_bytes(b"")
    return _folder_cfg(root), bad


def corrupt_jpeg_in_a_class_folder(tmp):
    root = _folder(tmp)
    bad = root / "val" / "cat" / "noise.jpg"
    bad.write_bytes(np.random.default_rng(2).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return _folder_cfg(root), bad


def jpeg_with_a_cut_header(tmp):
    root = _folder(tmp)
    bad = _jpeg(root / "train" / "cat" / "cut.jpg")
    bad.write_bytes(bad.read_bytes()[:300])
    return _folder_cfg(root), bad


def empty_class_folder(tmp):
    root = _folder(tmp)
    for split in ("train", "val"):
        (root / split / "eel").mkdir()
    _jpeg(root / "val" / "eel" / "1.jpg")
    return _folder_cfg(root), root / "train" / "eel"


def image_folder_without_val(tmp):
    root = _folder(tmp)
    for path in sorted((root / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "val").rmdir()
    return _folder_cfg(root), root


def veri_without_image_query(tmp):
    root = _veri(tmp)
    for path in (root / "image_query").iterdir():
        path.unlink()
    (root / "image_query").rmdir()
    return {"root": str(root)}, root


def veri_with_wrong_file_names(tmp):
    root = _veri(tmp)
    first = sorted((root / "image_test").iterdir())[0]
    bad = first.with_name("car_7.jpg")
    first.rename(bad)
    return {"root": str(root)}, bad


def veri_with_a_zero_byte_jpeg(tmp):
    root = _veri(tmp)
    bad = sorted((root / "image_train").iterdir())[2]
    bad.write_bytes(b"")
    return {"root": str(root)}, bad


def veri_with_a_corrupt_jpeg(tmp):
    root = _veri(tmp)
    bad = sorted((root / "image_query").iterdir())[0]
    bad.write_bytes(b"\xff\xd8" + bytes(500))  # a JPEG's first marker, then nothing a decoder can read
    return {"root": str(root)}, bad


CASES = [
    ("classify", missing_npz, "defaults.dataset.path", "an existing .npz file"),
    ("classify", npz_with_wrong_arrays, "defaults.dataset.path", "(arrays: a, b)"),
    ("classify", npz_with_mismatched_lengths, "defaults.dataset.path", "(100 images, 90 labels)"),
    ("classify", npz_that_is_not_a_zip, "defaults.dataset.path", "not an .npz (zip) archive"),
    ("classify", npz_with_float_labels, "defaults.dataset.path", "(labels: float64 of shape (30,))"),
    ("classify", npz_with_labels_out_of_range, "defaults.dataset.path", "(labels 0..12)"),
    ("classify", cifar_npz_of_grey_images, "defaults.dataset.path", "(images: uint8 of shape (30, 28, 28))"),
    ("classify", npz_smaller_than_the_split, "defaults.dataset.train_size", "<= 30 (the images in"),
    ("classify", cifar_batch_folder_missing_a_file, "defaults.dataset.root", "(missing: data_batch_3)"),
    ("classify", cifar_batch_cut_short, "defaults.dataset.root", "cut short"),
    ("classify", fashion_idx_cut_short, "defaults.dataset.root", "bytes; its header says"),
    ("classify", zero_byte_jpeg_in_a_class_folder, "defaults.dataset.root", "(an empty file)"),
    ("classify", corrupt_jpeg_in_a_class_folder, "defaults.dataset.root", "not an image file PIL can identify"),
    ("classify", jpeg_with_a_cut_header, "defaults.dataset.root", "damaged image header"),
    ("classify", empty_class_folder, "defaults.dataset.root", "(no image files)"),
    ("classify", image_folder_without_val, "defaults.dataset.root", "val/ is missing"),
    ("reid", veri_without_image_query, "defaults.dataset.root", "missing: image_query"),
    ("reid", veri_with_wrong_file_names, "defaults.dataset.root", "'car_7.jpg' does not start with"),
    ("reid", veri_with_a_zero_byte_jpeg, "defaults.dataset.root", "(an empty file)"),
    ("reid", veri_with_a_corrupt_jpeg, "defaults.dataset.root", "not an image file PIL can identify"),
]


@pytest.mark.parametrize(("trainable", "make", "field", "words"), CASES, ids=[c[1].__name__ for c in CASES])
def test_bad_data_fails_validate_in_one_line_naming_field_and_file_while_show_works(
    trainable, make, field, words, tmp_path, capsys
):
    dataset, offending = make(tmp_path)
    study = _study(tmp_path, trainable, dataset)
    assert main(["validate", str(study)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {study}: {field}: expected "), err
    assert str(offending) in err and words in err, err

    assert main(["show", str(study)]) == 0  # show only plans: no file is looked at
    assert "total: 1 trials" in capsys.readouterr().out


def test_a_bad_file_among_swept_values_is_named_at_the_sweep(tmp_path, capsys):
    good = _npz(tmp_path / "good.npz", **_pool(40))
    bad = _npz(tmp_path / "bad.npz", **_pool(40, labels=39))
    study = _study(tmp_path, "classify", {"name": "fashion_mnist", "train_size": 20, "val_size": 10},
                   grid=json.dumps({"dataset.path": [str(good), str(bad)]}))  # fmt: skip
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {study}: sections[0].grid.dataset.path: expected an .npz with arrays"), err
    assert f"{bad} (40 images, 39 labels)" in err


def test_run_with_bad_data_stops_before_ray_starts_and_creates_nothing(tmp_path):
    dataset, offending = npz_with_wrong_arrays(tmp_path)
    study = _study(tmp_path, "classify", dataset)
    results = tmp_path / "results"
    code = (f"import sys\nfrom expgrid.cli import main\nrc = main(['run', {str(study)!r}, '--results', {str(results)!r}])\n"
            "print('ray imported' if 'ray' in sys.modules else 'ray not imported')\nsys.exit(rc)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(offending) in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "ray not imported"
    assert not results.exists()


def test_good_data_of_every_kind_validates(tmp_path, capsys):
    cases = [
        ("classify", {"name": "digits"}),
        ("classify", {"name": "synthetic", "shape": [1, 8, 8]}),
        ("classify", {"name": "fashion_mnist", "path": str(_npz(tmp_path / "f.npz", **_pool(1600)))}),
        ("classify", {"name": "fashion_mnist", "root": str(write_fake_fashion_mnist(tmp_path / "f", 20, 10)),
                      "train_size": 10, "val_size": 5}),
        ("classify", {"name": "fashion_mnist", "root": str(tmp_path / "empty"), "download": True}),  # fetched later
        ("classify", {"name": "cifar10", "root": str(write_fake_cifar10(tmp_path / "c", 20, 10)), "train_size": 10,
                      "val_size": 5}),
        ("classify", _folder_cfg(_folder(tmp_path))),
        ("reid", {"root": str(_veri(tmp_path))}),
    ]  # fmt: skip
    np.savez_compressed(tmp_path / "c.npz", **_pool(40, (32, 32, 3)))
    cases.append(("classify", {"name": "cifar10", "path": str(tmp_path / "c.npz"), "train_size": 30, "val_size": 5}))
    for trainable, dataset in cases:
        study = _study(tmp_path, trainable, dataset)
        assert main(["validate", str(study)]) == 0, (dataset, capsys.readouterr().err)
        assert "OK" in capsys.readouterr().out


def test_each_distinct_data_config_is_checked_once(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent("""
        study: count
        trainable: classify
        metric: val_accuracy
        defaults: {dataset: {name: digits}, epochs: 1}
        sections:
          - {id: "1", grid: {optimizer.lr: [0.1, 0.01, 0.001]}}
          - {id: "2", grid: {dataset.seed: [0, 1], batch_size: [8, 16]}}
    """)
    )
    study, spec = prepare(path, check_data=False)
    assert check_study_data(study, spec) == 2  # seed 0 (section 1 and half of 2), seed 1


def test_npz_arrays_reads_the_headers_of_plain_and_compressed_files(tmp_path):
    arrays = {"images": np.zeros((5, 3, 4, 4), dtype=np.uint8), "labels": np.arange(5), "x": np.ones((2, 2), ">f4")}
    np.savez(tmp_path / "plain.npz", **arrays)
    np.savez_compressed(tmp_path / "small.npz", **arrays)
    for name in ("plain.npz", "small.npz"):
        found = npz_arrays(tmp_path / name)
        assert found == {k: (v.shape, v.dtype) for k, v in arrays.items()}
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04" + bytes(40))
    with pytest.raises(ValueError, match="not an .npz"):
        npz_arrays(tmp_path / "bad.npz")


# ----------------------------------------------------------------------------------------------
# A file a loader cannot decode: the error names it


def _cut(path: Path) -> Path:
    """Cut a JPEG halfway through its pixel data (after the start-of-scan marker): its header
    reads, its pixels do not."""
    data = path.read_bytes()
    scan = data.index(b"\xff\xda")
    path.write_bytes(data[: scan + (len(data) - scan) // 2])
    return path


def test_the_image_folder_loader_names_a_file_it_cannot_decode(tmp_path):
    from trainables.classification.batches import make_splits
    from trainables.classification.data import check_dataset_files, load_dataset

    root = _folder(tmp_path)
    bad = _cut(_jpeg(root / "train" / "dog" / "cut.jpg"))
    check_dataset_files(_folder_cfg(root))  # the header check passes it (see trainables/datafiles.py)
    data = load_dataset(_folder_cfg(root))
    for workers in (0, 1):  # in the trial's process, and re-raised by a DataLoader worker
        train = make_splits(data, "cpu", loader_workers=workers)["train"]
        with pytest.raises(OSError, match="image file is truncated") as info:
            list(train.epoch(4, shuffle=False))
        assert f"cannot decode image {bad}: " in str(info.value)


def test_the_reid_loader_names_a_file_it_cannot_decode_in_a_trial_and_when_preloading(tmp_path):
    from trainables.reid.data import check_dataset_files, load_index, read_image

    root = _veri(tmp_path)
    bad = _cut(sorted((root / "image_test").iterdir())[1])
    check_dataset_files({"root": str(root)})
    with pytest.raises(OSError) as info:
        read_image(str(bad))
    assert str(info.value) == f"cannot decode image {bad}: Image is incomplete or truncated"  # no C++ source line
    with pytest.raises(OSError, match=f"cannot decode image {bad}: "):
        load_index({"root": str(root), "height": 16, "width": 16})  # preloaded on the driver
    assert "images" not in load_index({"root": str(root), "preload_mb": 0})["gallery"]  # read in the trial


def test_unreadable_image_keeps_the_first_line_of_the_reason():
    error = unreadable_image("/d/x.jpg", RuntimeError("decode_jpeg, /src/decode_jpeg.cpp:171, Bad marker\nmore"))
    assert str(error) == "cannot decode image /d/x.jpg: Bad marker"
    assert str(unreadable_image("/d/x.png", SyntaxError(""))) == "cannot decode image /d/x.png: SyntaxError"


def test_the_value_checks_look_at_no_file(tmp_path):
    from trainables.classification.data import check_dataset
    from trainables.reid.data import check_dataset as check_reid_dataset

    nowhere = str(tmp_path / "nowhere")
    for cfg in ({"name": "fashion_mnist", "path": nowhere}, {"name": "cifar10", "root": nowhere},
                _folder_cfg(Path(nowhere))):  # fmt: skip
        check_dataset(cfg)
    check_reid_dataset({"root": nowhere})
    with pytest.raises(ConfigError, match="dataset.root"):  # a value that is no path is still refused
        check_reid_dataset({"root": 3})
