"""``classify`` data: cifar10, image_folder and synthetic datasets, their checks, and batch sources."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from expgrid.errors import ConfigError
from trainables.classification.batches import Batches, FolderBatches, TensorBatches, make_splits
from trainables.classification.data import CIFAR10_TRAIN_SAMPLES, check_dataset, check_dataset_files, load_dataset
from trainables.classification.synthetic import synthetic_pool, write_fake_cifar10, write_fake_image_folder

CPU = torch.device("cpu")


def _raises(field: str, call, *words: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field, str(info.value)
    for word in words:
        assert word in str(info.value)
    return info.value


def _check_unit_images(x: np.ndarray, shape: tuple[int, ...]) -> None:
    assert x.shape == shape and x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0


# ----------------------------------------------------------------------------------------------
# cifar10


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar"), n_train=60, n_test=20)


def _pickle_batch(root, name):
    with open(root / "cifar-10-batches-py" / name, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_fake_cifar10_has_torchvisions_layout_but_not_its_checksums(cifar_root):
    from torchvision.datasets import CIFAR10

    # The layout torchvision expects, which is why the loader reads the same pickles itself ...
    folder = cifar_root / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    )
    assert sum(len(_pickle_batch(cifar_root, f"data_batch_{i}")["labels"]) for i in range(1, 6)) == 60
    # ... since torchvision insists on the real files' MD5 sums.
    with pytest.raises(RuntimeError, match="corrupted"):
        CIFAR10(str(cifar_root), train=True, download=False)


def test_cifar10_root_splits_the_training_batches_and_keeps_the_test_batch(cifar_root):
    cfg = {"name": "cifar10", "root": str(cifar_root), "train_size": 30, "val_size": 20, "seed": 3}
    check_dataset(cfg)
    data = load_dataset(cfg)
    assert data["num_classes"] == 10 and data["classes"][:2] == ["airplane", "automobile"]
    _check_unit_images(data["x_train"], (30, 3, 32, 32))
    _check_unit_images(data["x_val"], (20, 3, 32, 32))
    _check_unit_images(data["x_test"], (20, 3, 32, 32))
    for split in ("train", "val", "test"):
        y = data[f"y_{split}"]
        assert y.dtype == np.int64 and 0 <= y.min() and y.max() <= 9

    # test: the whole test batch in file order; the pixels are the file's rows (channel-major)
    test = _pickle_batch(cifar_root, "test_batch")
    np.testing.assert_array_equal(data["y_test"], test["labels"])
    np.testing.assert_allclose(data["x_test"].reshape(20, -1), test["data"] / 255.0, rtol=1e-6)

    # train and val: distinct training images, each with its own label
    rows = np.concatenate([_pickle_batch(cifar_root, f"data_batch_{i}")["data"] for i in range(1, 6)])
    labels = sum((_pickle_batch(cifar_root, f"data_batch_{i}")["labels"] for i in range(1, 6)), [])
    index = {row.tobytes(): label for row, label in zip(rows, labels, strict=True)}
    seen = set()
    for split in ("train", "val"):
        for x, y in zip(data[f"x_{split}"], data[f"y_{split}"], strict=True):
            key = np.rint(x.reshape(-1) * 255).astype(np.uint8).tobytes()
            assert index[key] == y and key not in seen
            seen.add(key)

    again, other = load_dataset(cfg), load_dataset({**cfg, "seed": 4})
    np.testing.assert_array_equal(again["x_train"], data["x_train"])
    assert not np.array_equal(other["x_train"], data["x_train"])
    np.testing.assert_array_equal(other["x_test"], data["x_test"])  # the test split does not depend on the seed


def test_cifar10_sizes_are_checked_against_50000_before_and_the_files_on_load(cifar_root):
    cfg = {"name": "cifar10", "root": str(cifar_root), "train_size": 50, "val_size": 20}
    check_dataset(cfg)  # the driver's check knows only that a real root has 50,000
    _raises("dataset.train_size", lambda: load_dataset(cfg), "<= 60")
    too_many = {**cfg, "train_size": CIFAR10_TRAIN_SAMPLES, "val_size": 1}
    _raises("dataset.train_size", lambda: check_dataset(too_many), "<= 50000")


def test_cifar10_npz_in_either_layout_gives_the_same_split(tmp_path):
    x, y = synthetic_pool(50, (3, 32, 32), 10, seed=1)
    nchw = np.rint(x * 255).astype(np.uint8)
    np.savez(tmp_path / "nchw.npz", images=nchw, labels=y)
    np.savez(tmp_path / "nhwc.npz", images=nchw.transpose(0, 2, 3, 1), labels=y)
    cfg = {"name": "cifar10", "train_size": 20, "val_size": 10}
    a = load_dataset({**cfg, "path": str(tmp_path / "nchw.npz")})
    b = load_dataset({**cfg, "path": str(tmp_path / "nhwc.npz")})
    for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(a[key], b[key])
    _check_unit_images(a["x_test"], (20, 3, 32, 32))  # the rest of the pool
    # the three splits are the pool, each image once
    pool = np.concatenate([a["x_train"], a["x_val"], a["x_test"]])
    np.testing.assert_allclose(np.sort(pool.reshape(50, -1), axis=0), np.sort(nchw.reshape(50, -1) / 255, axis=0))

    np.savez(tmp_path / "grey.npz", images=nchw[:, 0], labels=y)
    _raises("dataset.path", lambda: load_dataset({**cfg, "path": str(tmp_path / "grey.npz")}), "N×32×32×3")


def test_cifar10_without_files_says_to_download_or_give_a_path(tmp_path):
    cfg = {"name": "cifar10", "root": str(tmp_path / "nowhere")}
    for call in (check_dataset_files, load_dataset):
        _raises("dataset.root", lambda call=call: call(cfg), "cifar-10-batches-py", "dataset.download: true")
    _raises("dataset.path", lambda: check_dataset({"name": "cifar10"}), "dataset.root")
    _raises("dataset.path", lambda: check_dataset_files({"name": "cifar10", "path": str(tmp_path / "no.npz")}))
    check_dataset_files({**cfg, "download": True})  # would download there: accepted without reading anything
    # The value check looks at no file (`expgrid show` works without the data).
    check_dataset(cfg)
    check_dataset({"name": "cifar10", "path": str(tmp_path / "no.npz")})


def test_truncated_cifar10_batch_is_a_config_error(tmp_path):
    root = write_fake_cifar10(tmp_path, n_train=10, n_test=5)
    (root / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02}q")
    _raises(
        "dataset.root",
        lambda: load_dataset({"name": "cifar10", "root": str(root), "train_size": 5, "val_size": 2}),
        "data_batch_3",
    )


# ----------------------------------------------------------------------------------------------
# image_folder


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    return write_fake_image_folder(
        tmp_path_factory.mktemp("images"), ["cat", "dog", "eel"], 4, (20, 24), val_per_class=2
    )


def folder_cfg(root, **extra):
    return {"name": "image_folder", "root": str(root), "train_size": None, "val_size": None, **extra}


def test_image_folder_lists_files_with_their_class_folders(folder_root):
    cfg = folder_cfg(folder_root, image_size=16)
    check_dataset(cfg)
    data = load_dataset(cfg)
    assert data["classes"] == ["cat", "dog", "eel"] and data["num_classes"] == 3
    assert data["image_size"] == 16 and data["loader_workers"] == 2
    assert len(data["paths_train"]) == 12 and len(data["paths_val"]) == 6
    for split in ("train", "val"):
        for path, label in zip(data[f"paths_{split}"], data[f"y_{split}"], strict=True):
            assert path.startswith(str(folder_root.resolve()))  # absolute: trials run elsewhere
            assert path.split("/")[-3:-1] == [split, data["classes"][label]]
    assert "x_train" not in data  # nothing decoded on the driver
    assert load_dataset(folder_cfg(folder_root))["image_size"] == 64  # the default


def test_image_folder_batches_decode_resize_and_scale(folder_root):
    data = load_dataset(folder_cfg(folder_root, image_size=16, loader_workers=0))
    splits = make_splits(data, CPU)
    assert set(splits) == {"train", "val"}
    train = splits["train"]
    assert isinstance(train, FolderBatches) and isinstance(train, Batches)
    assert (train.num_samples, train.num_classes, train.sample_shape) == (12, 3, (3, 16, 16))
    batches = list(train.epoch(5, shuffle=False))
    assert [len(y) for _, y in batches] == [5, 5, 2]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (12, 3, 16, 16) and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1
    np.testing.assert_array_equal(y.numpy(), data["y_train"])
    # image 0 is the file, RGB, resized by PIL (bilinear), / 255
    with Image.open(data["paths_train"][0]) as image:
        expected = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR)) / 255.0
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)


def test_image_folder_shuffle_with_workers_is_seeded_and_covers_every_file(folder_root):
    data = load_dataset(folder_cfg(folder_root, image_size=8))
    train = make_splits(data, CPU, loader_workers=2)["train"]
    reference = {tuple(x.flatten().tolist()) for x, _ in train.epoch(12, shuffle=False) for x in x}

    def run(seed):
        torch.manual_seed(seed)
        return [torch.cat([x for x, _ in train.epoch(5, shuffle=True)]) for _ in range(2)]

    first, again, other = run(0), run(0), run(1)
    for epoch in first:
        assert {tuple(x.flatten().tolist()) for x in epoch} == reference  # each file once
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], other[0])
    # 12 = 11 + 1: drop_last_single drops the one-sample batch, decoding 11 images
    assert [len(y) for _, y in train.epoch(11, shuffle=True, drop_last_single=True)] == [11]


def test_image_folder_subsets_are_seeded(folder_root):
    cfg = folder_cfg(folder_root, train_size=5, val_size=3)
    check_dataset(cfg)
    a, b, c = load_dataset(cfg), load_dataset(cfg), load_dataset({**cfg, "seed": 1})
    assert len(a["paths_train"]) == 5 and len(a["paths_val"]) == 3
    assert a["paths_train"] == b["paths_train"] and a["paths_train"] != c["paths_train"]
    assert len(set(a["paths_train"])) == 5
    assert load_dataset({**cfg, "train_size": 7})["paths_val"] == a["paths_val"]  # val does not follow train_size
    _raises("dataset.train_size", lambda: load_dataset({**cfg, "train_size": 13}), "at most the 12 images")


def test_image_folder_class_mismatch_names_the_root(tmp_path):
    root = write_fake_image_folder(tmp_path, ["cat", "dog"], 1, 8)
    (root / "val" / "dog").rename(root / "val" / "dingo")
    for call in (check_dataset_files, load_dataset):
        _raises("dataset.root", lambda call=call: call(folder_cfg(root)), "'dog'", "'dingo'", "the same class folders")


def test_image_folder_missing_or_empty_folder_shows_the_layout(tmp_path):
    root = write_fake_image_folder(tmp_path, 2, 1, 8)
    layout = "<root>/valid/<class>/<image>"
    _raises("dataset.root", lambda: check_dataset_files(folder_cfg(root, val_dir="valid")), layout, "valid/ is missing")
    check_dataset(folder_cfg(root, val_dir="valid"))  # the value check looks at no folder
    (root / "valid").mkdir()
    _raises("dataset.root", lambda: check_dataset_files(folder_cfg(root, val_dir="valid")), "valid/ has no class folders")
    _raises("dataset.root", lambda: check_dataset({"name": "image_folder"}), "ImageFolder layout")
    (root / "val" / "class_02").mkdir()
    (root / "train" / "class_02").mkdir()  # a class without images: found when listing files
    _raises("dataset.root", lambda: load_dataset(folder_cfg(root)), "class_02")
    _raises("dataset.root", lambda: check_dataset_files(folder_cfg(root)), "train/class_02 (no image files)")


@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"name": "digits", "image_size": 32}, "dataset.image_size"),  # image_folder's option
        ({"name": "digits", "train_size": None}, "dataset.train_size"),  # null only for image_folder
        ({"name": "cifar10", "path": "x.npz", "shape": [3, 8, 8]}, "dataset.shape"),  # synthetic's option
        ({"name": "synthetic", "loader_workers": 1.5}, "dataset.loader_workers"),
        ({"name": "synthetic", "shape": [3, 8]}, "dataset.shape"),
        ({"name": "synthetic", "num_classes": 1}, "dataset.num_classes"),
        ({"name": "image_folder", "root": ".", "loader_workers": -1}, "dataset.loader_workers"),
        ({"name": "image_folder", "root": ".", "image_size": 0}, "dataset.image_size"),
        ({"name": "image_folder", "root": ".", "val_dir": "train"}, "dataset.val_dir"),
        ({"name": "digits", "download": "yes"}, "dataset.download"),
    ],
)
def test_bad_dataset_options_name_their_field(cfg, field):
    _raises(field, lambda: check_dataset(cfg))


def test_options_of_other_datasets_must_keep_their_defaults_except_loader_workers():
    error = _raises("dataset.num_classes", lambda: check_dataset({"name": "digits", "num_classes": 5}))
    assert "applies to dataset synthetic only, not digits" in str(error)
    check_dataset({"name": "digits", "shape": (3, 32, 32), "num_classes": 10, "image_size": None})  # the defaults
    check_dataset({"name": "digits", "loader_workers": 8})  # how to load, not what: ignored


# ----------------------------------------------------------------------------------------------
# synthetic


def test_synthetic_is_seeded_balanced_and_separable():
    cfg = {"name": "synthetic", "shape": [1, 12, 10], "num_classes": 4, "train_size": 200, "val_size": 80}
    check_dataset(cfg)
    data = load_dataset(cfg)
    _check_unit_images(data["x_train"], (200, 1, 12, 10))
    _check_unit_images(data["x_val"], (80, 1, 12, 10))
    _check_unit_images(data["x_test"], (80, 1, 12, 10))
    counts = np.bincount(np.concatenate([data["y_train"], data["y_val"], data["y_test"]]), minlength=4)
    assert counts.tolist() == [90, 90, 90, 90]
    np.testing.assert_array_equal(load_dataset(cfg)["x_train"], data["x_train"])
    assert not np.array_equal(load_dataset({**cfg, "seed": 1})["x_train"], data["x_train"])
    # nearest class mean (fitted on train) classifies val far above chance (0.25)
    means = np.stack([data["x_train"][data["y_train"] == k].reshape(-1, 120).mean(0) for k in range(4)])
    distances = ((data["x_val"].reshape(-1, 1, 120) - means) ** 2).sum(-1)
    assert (distances.argmin(1) == data["y_val"]).mean() > 0.8


# ----------------------------------------------------------------------------------------------
# TensorBatches and make_splits


def _numbered(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i is filled with i; labels i % 3. Read-only, as arrays from Ray's object store are."""
    x = np.repeat(np.arange(n, dtype=np.float32), 2 * 2 * 2).reshape(n, 2, 2, 2)
    y = np.arange(n, dtype=np.int64) % 3
    x.flags.writeable = y.flags.writeable = False
    return x, y


def test_tensor_batches_cover_every_sample_once_per_epoch_reproducibly():
    x, y = _numbered(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning
        source = TensorBatches(x, y, CPU)
    assert (source.num_samples, source.num_classes, source.sample_shape) == (10, 3, (2, 2, 2))

    def epochs(seed):
        torch.manual_seed(seed)
        out = []
        for _ in range(2):
            batches = list(source.epoch(4, shuffle=True))
            assert [len(b[1]) for b in batches] == [4, 4, 2]
            ids = torch.cat([b[0][:, 0, 0, 0] for b in batches]).long()
            assert torch.equal(torch.cat([b[1] for b in batches]), ids % 3)  # labels travel with images
            out.append(ids.tolist())
        return out

    first = epochs(0)
    assert all(sorted(ids) == list(range(10)) for ids in first)
    assert first[0] != first[1]  # reshuffled every epoch
    assert epochs(0) == first and epochs(1) != first
    ordered = torch.cat([b[0][:, 0, 0, 0] for b in source.epoch(3, shuffle=False)])
    assert ordered.tolist() == list(range(10))


def test_drop_last_single_drops_only_a_final_batch_of_one():
    source = TensorBatches(*_numbered(9), CPU)
    assert [len(y) for _, y in source.epoch(4, shuffle=True, drop_last_single=True)] == [4, 4]
    assert [len(y) for _, y in source.epoch(4, shuffle=True)] == [4, 4, 1]
    assert [len(y) for _, y in source.epoch(3, shuffle=False, drop_last_single=True)] == [3, 3, 3]


def test_make_splits_gives_tensor_batches_and_a_lazy_test_split():
    data = load_dataset({"name": "synthetic", "shape": [3, 8, 8], "train_size": 30, "val_size": 10})
    splits = make_splits(data, CPU)
    assert set(splits) == {"train", "val", "test"}
    assert all(isinstance(s, TensorBatches) for s in splits.values())
    assert splits["test"]._x is None  # copied to the device only when iterated
    x, y = next(splits["test"].epoch(100, shuffle=False))
    np.testing.assert_array_equal(x.numpy(), data["x_test"])
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert splits["train"].sample_shape == (3, 8, 8) and splits["train"].num_classes == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_batches_land_on_the_gpu(folder_root):
    cuda = torch.device("cuda")
    x, y = next(TensorBatches(*_numbered(5), cuda).epoch(5, shuffle=True))
    assert x.is_cuda and y.is_cuda
    folder = make_splits(load_dataset(folder_cfg(folder_root, image_size=8)), cuda)["val"]
    x, y = next(folder.epoch(4, shuffle=True))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32 and x.shape == (4, 3, 8, 8)


# ----------------------------------------------------------------------------------------------
# 2-D points: moons, circles, spirals (two_d.py)

POINTS = ("moons", "circles", "spirals")


@pytest.mark.parametrize("name", POINTS)
def test_point_datasets_split_a_balanced_seeded_pool_of_2d_points(name):
    from trainables.classification.two_d import generate

    cfg = {"name": name, "train_size": 300, "val_size": 100, "n_samples": 501, "noise": 0.1, "seed": 3}
    check_dataset(cfg)
    data = load_dataset(cfg)
    assert data["num_classes"] == 2
    for split, n in (("train", 300), ("val", 100), ("test", 101)):  # the rest of the 501 is the test split
        x, y = data[f"x_{split}"], data[f"y_{split}"]
        assert x.shape == (n, 2) and x.dtype == np.float32 and y.shape == (n,) and y.dtype == np.int64
        assert set(np.unique(y)) == {0, 1}
        assert abs(np.mean(y) - 0.5) < 0.15  # each split near balanced (the pool exactly)
    pool = np.concatenate([data[f"y_{s}"] for s in ("train", "val", "test")])
    assert abs(int(np.sum(pool == 0)) - int(np.sum(pool == 1))) == 1  # 501 points: 250 and 251
    # the splits are the generated pool, cut without loss or repeat
    x_pool, _ = generate(name, 501, 0.1, 3)
    together = np.concatenate([data[f"x_{s}"] for s in ("train", "val", "test")])
    np.testing.assert_array_equal(np.unique(together, axis=0), np.unique(x_pool, axis=0))
    # the seed fixes everything; another seed is other data
    again = load_dataset(cfg)
    for key in ("x_train", "y_train", "x_test"):
        np.testing.assert_array_equal(again[key], data[key])
    assert not np.array_equal(load_dataset({**cfg, "seed": 4})["x_train"], data["x_train"])


def test_point_datasets_default_sizes_and_noise():
    from trainables.classification.two_d import DEFAULT_NOISE, noise_of, pool_size

    data = load_dataset({"name": "moons", "train_size": 64, "val_size": 32})  # n_samples null
    assert [len(data[f"y_{s}"]) for s in ("train", "val", "test")] == [64, 32, 32]
    assert pool_size({"train_size": 64, "val_size": 32, "n_samples": None}) == 128
    assert noise_of({"name": "spirals", "noise": None}) == DEFAULT_NOISE["spirals"] == 0.2
    assert noise_of({"name": "spirals", "noise": 0}) == 0.0


def test_spirals_follow_their_formula():
    """Noise 0: each point lies on arm k: r = t, θ = t + k·π (mod 2π), t in [0.5, 3π]; with noise σ
    (same seed, so the same t and k) the points move by N(0, σ²) per coordinate."""
    from trainables.classification.two_d import SPIRAL_T_MAX, SPIRAL_T_MIN, spirals

    x, k = spirals(4000, 0.0, seed=1)
    r = np.hypot(x[:, 0], x[:, 1]).astype(np.float64)
    assert SPIRAL_T_MIN - 1e-5 <= r.min() and r.max() <= SPIRAL_T_MAX + 1e-5
    assert r.min() < SPIRAL_T_MIN + 0.05 and r.max() > SPIRAL_T_MAX - 0.05  # t spans the whole range
    theta = np.arctan2(x[:, 1], x[:, 0]).astype(np.float64)
    off = np.angle(np.exp(1j * (theta - r - k * np.pi)))  # wrapped into (-π, π]
    assert np.abs(off).max() < 1e-4
    assert np.bincount(k).tolist() == [2000, 2000]
    noisy, k_noisy = spirals(4000, 0.3, seed=1)
    np.testing.assert_array_equal(k_noisy, k)
    moved = (noisy - x).ravel()
    assert abs(moved.mean()) < 0.03 and abs(moved.std() - 0.3) < 0.02


def test_moons_and_circles_lie_on_their_curves_without_noise():
    from trainables.classification.two_d import CIRCLES_FACTOR, generate

    x, y = generate("moons", 400, 0.0, 0)
    upper, lower = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, atol=1e-5)  # the upper half circle about (0, 0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1.0, atol=1e-5)  # lower, about (1, ½)
    assert upper[:, 1].min() >= -1e-6 and lower[:, 1].max() <= 0.5 + 1e-6
    x, y = generate("circles", 400, 0.0, 0)
    np.testing.assert_allclose(np.hypot(*x[y == 0].T), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(*x[y == 1].T), CIRCLES_FACTOR, atol=1e-5)


@pytest.mark.parametrize(
    ("cfg", "field", "words"),
    [
        ({"name": "moons", "train_size": 100, "val_size": 50, "n_samples": 150}, "dataset.n_samples", "more than"),
        ({"name": "spirals", "n_samples": 2.5}, "dataset.n_samples", "integer"),
        ({"name": "circles", "noise": -0.1}, "dataset.noise", "std >= 0"),
        ({"name": "circles", "noise": "big"}, "dataset.noise", "0.05 for circles"),
        ({"name": "digits", "noise": 0.1}, "dataset.noise", "moons or circles or spirals only"),
        ({"name": "synthetic", "n_samples": 100}, "dataset.n_samples", "only, not synthetic"),
    ],
)
def test_bad_point_dataset_options_name_their_field(cfg, field, words):
    _raises(field, lambda: check_dataset(cfg), words)


def test_point_datasets_take_only_the_mlp_and_no_augmentation():
    from trainables.classification.train import check_config

    moons = {"name": "moons", "train_size": 64, "val_size": 32}
    check_config({"dataset": moons, "model": {"name": "mlp", "depth": 2, "width": 8, "activation": "sine"}})
    _raises("model.name", lambda: check_config({"dataset": moons, "model": {"name": "simple_cnn"}}), "mlp for dataset moons")
    _raises("augment", lambda: check_config({"dataset": moons, "augment": "hflip"}), "2-D points")


def test_a_study_giving_a_point_dataset_an_image_model_is_one_line_before_anything_runs(tmp_path):
    import os
    import subprocess
    import sys

    study = tmp_path / "moons.yaml"
    study.write_text(
        "study: moons\ntrainable: classify\nmetric: val_accuracy\nmode: max\n"
        "defaults: {dataset: {name: moons, train_size: 100, val_size: 50}, model: {name: resnet18}}\n"
        "sections:\n  - {id: '1', grid: {optimizer.lr: [0.1, 0.01]}}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "expgrid", "validate", str(study)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**os.environ, "MLFLOW_TRACKING_URI": ""})  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert proc.stderr == (
        f"error: {study}: defaults.model.name: expected mlp for dataset moons "
        "(2-D points; the other models take images), got 'resnet18'\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moons.yaml"]  # nothing created
