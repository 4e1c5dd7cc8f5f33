"""Re-ID data: VeRi file names and layout, the generated dataset, augmentations, samplers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from expgrid.errors import ConfigError, UnknownNameError
from trainables.reid.data import ImageSet, load_index, parse_name, read_image
from trainables.reid.samplers import SAMPLERS, epoch_generator, identity_order, random_order, rank_batches
from trainables.reid.synthetic import write_fake_veri
from trainables.reid.transforms import AUGMENTATIONS, Resize, eval_transform, train_transform

LAYOUT_WORDS = ("image_train", "image_query", "image_test", "0002_c002_00030600_0.jpg")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    """8 identities (4 train, 4 test), 3 cameras, 2 images per camera, 40×48 images."""
    return write_fake_veri(tmp_path_factory.mktemp("veri"), ids=8, cameras=3, images_per_camera=2, size=(40, 48))


def write_images(folder: Path, names: list[str], size=(20, 16)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", size, (90, 40, 200)).save(folder / name)


# ----------------------------------------------------------------------------------------------
# File names and the VeRi layout


def test_file_names_give_vehicle_and_camera_ids():
    assert parse_name("0002_c002_00030600_0.jpg") == (2, 2)
    assert parse_name("0776_c020_00123456_1.jpg") == (776, 20)
    assert parse_name("-1_c3s1_000123_01.jpg") == (-1, 3)  # Market-1501 style junk
    with pytest.raises(ValueError, match="<vehicle id>_c<camera id>_"):
        parse_name("car_02.jpg")


def test_generated_dataset_is_indexed_with_relabelled_train_ids(fake_root):
    index = load_index({"root": str(fake_root), "height": 40, "width": 48})
    train, query, gallery = index["train"], index["query"], index["gallery"]
    assert len(train["paths"]) == 4 * 3 * 2 and len(gallery["paths"]) == 4 * 3 * 2 and len(query["paths"]) == 4 * 3
    assert index["num_train_pids"] == 4
    assert sorted(set(train["pids"].tolist())) == [1, 3, 5, 7]  # odd ids train
    assert sorted(set(query["pids"].tolist())) == sorted(set(gallery["pids"].tolist())) == [2, 4, 6, 8]
    np.testing.assert_array_equal(train["labels"], (train["pids"] - 1) // 2)  # 1,3,5,7 → 0,1,2,3
    assert set(query["camids"].tolist()) == {1, 2, 3}
    for split in (train, query, gallery):  # pids and cameras are those of the file names
        for path, pid, camid in zip(split["paths"], split["pids"], split["camids"]):
            assert parse_name(Path(path).name) == (pid, camid)
    # small enough to preload at the configured size, as uint8 (N, 3, H, W); preload_mb 0: never
    assert train["images"].shape == (24, 3, 40, 48) and train["images"].dtype == np.uint8
    assert "images" not in load_index({"root": str(fake_root), "preload_mb": 0})["train"]


def test_preloaded_and_file_read_images_are_the_same(fake_root):
    index = load_index({"root": str(fake_root), "height": 32, "width": 32})
    gallery = index["gallery"]
    on_disk = {"paths": gallery["paths"]}
    resize = Resize(32, 32)
    preloaded, _ = ImageSet(gallery, gallery["pids"], resize)[5]
    from_file, pid = ImageSet(on_disk, gallery["pids"], resize)[5]
    assert torch.equal(preloaded, from_file) and pid == gallery["pids"][5]
    assert torch.equal(read_image(gallery["paths"][5]), read_image(gallery["paths"][5], 40, 48))  # no-op resize


def test_relabelling_follows_increasing_ids_and_junk_is_skipped(tmp_path):
    write_images(tmp_path / "image_train", ["0012_c001_1.jpg", "0003_c002_2.jpg", "0007_c001_3.jpg", "-1_c001_4.jpg"])
    write_images(tmp_path / "image_query", ["0100_c001_1.jpg"])
    write_images(tmp_path / "image_test", ["0100_c002_1.jpg", "0100_c003_1.png"])
    (tmp_path / "image_test" / "Thumbs.db").write_bytes(b"not an image")
    index = load_index({"root": str(tmp_path), "preload_mb": 0})
    train = index["train"]
    pids_to_labels = dict(zip(train["pids"].tolist(), train["labels"].tolist()))
    assert pids_to_labels == {3: 0, 7: 1, 12: 2} and index["num_train_pids"] == 3
    assert len(index["gallery"]["paths"]) == 2


def test_missing_or_empty_folders_show_the_expected_layout(tmp_path):
    write_images(tmp_path / "image_train", ["0001_c001_1.jpg"])
    with pytest.raises(ConfigError) as info:
        load_index({"root": str(tmp_path)})
    assert info.value.field == "dataset.root" and "missing: image_query, image_test" in str(info.value)
    assert all(word in str(info.value) for word in LAYOUT_WORDS)

    (tmp_path / "image_query").mkdir()
    write_images(tmp_path / "image_test", ["0002_c001_1.jpg"])
    with pytest.raises(ConfigError) as info:
        load_index({"root": str(tmp_path)})
    assert "image_query/ has no such images" in str(info.value)
    assert all(word in str(info.value) for word in LAYOUT_WORDS)

    write_images(tmp_path / "image_query", ["car_7.jpg"])
    with pytest.raises(ConfigError, match="'car_7.jpg' does not start with"):
        load_index({"root": str(tmp_path)})
    with pytest.raises(ConfigError, match="dataset.root: expected a folder in the VeRi-776 layout"):
        load_index({"root": None})


# ----------------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize("name", AUGMENTATIONS.names())
def test_each_augmentation_gives_a_normalised_image_of_the_configured_size(name):
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8)
    transform = train_transform([name], 32, 24)
    outputs = [transform(image) for _ in range(8)]  # p = 0.5 branches: both sides taken in 8 draws
    for out in outputs:
        assert out.shape == (3, 32, 24) and out.dtype == torch.float32
    assert any(not torch.equal(outputs[0], out) for out in outputs[1:])  # it is random


def test_all_augmentations_compose_in_any_order_and_eval_is_deterministic():
    image = torch.randint(0, 256, (3, 50, 40), dtype=torch.uint8)
    names = AUGMENTATIONS.names()
    torch.manual_seed(0)
    forward = train_transform(names, 32, 24)(image)
    torch.manual_seed(0)
    backward = train_transform(list(reversed(names)), 32, 24)(image)
    assert forward.shape == (3, 32, 24) and torch.equal(forward, backward)  # one fixed order
    plain = eval_transform(32, 24)
    assert torch.equal(plain(image), plain(image))
    # resize + ImageNet normalisation: a uniform grey image maps to (grey/255 - mean) / std
    grey = torch.full((3, 10, 10), 128, dtype=torch.uint8)
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(plain(grey)[:, 0, 0], expected)
    no_augmentation = train_transform([], 32, 24)
    assert torch.equal(no_augmentation(image), plain(image))


def test_unknown_augmentation_is_rejected_with_its_position():
    with pytest.raises(UnknownNameError) as info:
        train_transform(["hflip", "random_erase"], 32, 32)
    assert info.value.field == "augmentations[1]" and "did you mean random_erasing" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Samplers and per-rank batches


LABELS = np.repeat(np.arange(10), [6, 5, 4, 4, 3, 8, 4, 4, 2, 6])  # 46 images of 10 identities


def test_random_sampler_is_a_seeded_permutation():
    order = random_order(LABELS, epoch_generator(1, 1), 16)
    assert sorted(order) == list(range(len(LABELS)))
    assert order == random_order(LABELS, epoch_generator(1, 1), 16)
    assert order != random_order(LABELS, epoch_generator(1, 2), 16)


def test_identity_sampler_gives_p_distinct_identities_of_k_images_per_batch():
    order = identity_order(LABELS, epoch_generator(0, 1), 16, instances=4)
    assert len(order) % 16 == 0 and len(order) > 0
    for start in range(0, len(order), 16):
        batch = LABELS[order[start : start + 16]]
        groups = batch.reshape(4, 4)
        assert (groups == groups[:, :1]).all()  # runs of K = 4 of one identity
        assert len(set(groups[:, 0].tolist())) == 4  # P = 4 distinct identities
    # identity 8 has 2 images: its one group draws them again to make up K = 4
    assert sorted(set(order)) != sorted(order) and set(order) <= set(range(len(LABELS)))
    with pytest.raises(ValueError, match="multiple of 4"):
        identity_order(LABELS, epoch_generator(0, 1), 18, instances=4)


@pytest.mark.parametrize("sampler", SAMPLERS.names())
@pytest.mark.parametrize("world", [1, 2, 4])
def test_rank_shards_cover_each_full_batch_once_with_equal_steps(sampler, world):
    order = SAMPLERS.get(sampler)(LABELS, epoch_generator(3, 1), 16, 4)
    shards = [rank_batches(order, 16, rank, world) for rank in range(world)]
    steps = {len(s) for s in shards}
    assert steps == {len(order) // 16}  # every rank the same number of steps
    assert all(len(b) == 16 // world for s in shards for b in s)
    covered = sorted(i for s in shards for b in s for i in b)
    assert covered == sorted(order[: len(order) // 16 * 16])  # each sampled position once
    if sampler == "identity":  # 16 / world is a multiple of K = 4: each rank gets whole groups
        for s in shards:
            for b in s:
                groups = LABELS[b].reshape(-1, 4)
                assert (groups == groups[:, :1]).all()
