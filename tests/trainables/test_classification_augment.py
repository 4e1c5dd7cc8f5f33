"""``classify`` augmentation: config forms, presets, and the batched transforms' geometry."""

from __future__ import annotations

import pytest
import torch

from expgrid.errors import ConfigError, UnknownNameError
from trainables.classification.augment import (
    ERASE_FILL,
    PRESETS,
    affine,
    build_augment,
    check_augment,
    resolve_augment,
)

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _batch(n: int = 8, c: int = 3, h: int = 16, w: int = 16, device: str = "cpu") -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0)).to(device)


def _hot(h: int, w: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(1, 1, h, w)
    x[0, 0, row, col] = 1.0
    return x


def test_none_empty_and_zero_strengths_build_nothing():
    for value in ("none", [], None, [{"rotate": 0}, {"erase": 0}]):
        check_augment(value)
        assert build_augment(value) is None


def test_config_forms_resolve_to_strengths():
    assert resolve_augment("moderate") == {"hflip": 0.5, "translate": 0.1, "rotate": 10.0, "zoom": 0.1}
    assert resolve_augment("aggressive") == {"hflip": 0.5, "translate": 0.2, "rotate": 25.0, "zoom": 0.25, "erase": 0.5}
    assert resolve_augment("hflip") == {"hflip": 0.5}
    assert resolve_augment(["erase", {"rotate": 15}, "hflip"]) == {"erase": 0.5, "rotate": 15.0, "hflip": 0.5}
    assert set(PRESETS) == {"none", "moderate", "aggressive"}


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ("moderat", "augment", ["did you mean moderate"]),
        (["hflip", "shear"], "augment[1]", ["augmentation transform", "rotate"]),
        ([{"rotate": 200}], "augment[0].rotate", ["degrees", "[0, 180]"]),
        ([{"hflip": True}], "augment[0].hflip", ["probability"]),
        ([{"zoom": 0.1, "rotate": 5}], "augment[0]", ["one-key mapping"]),
        (["hflip", {"hflip": 1.0}], "augment[1]", ["at most once"]),
        ({"hflip": 0.5}, "augment", ["a preset", "list of transforms"]),
    ],
)
def test_bad_values_are_rejected_naming_augment(value, field, words):
    with pytest.raises(ConfigError) as info:
        check_augment(value)
    assert info.value.field == field, str(info.value)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(ConfigError):
        build_augment(value)


def test_unknown_preset_lists_presets_and_transforms():
    with pytest.raises(UnknownNameError) as info:
        check_augment("strong")
    assert "aggressive" in str(info.value) and "erase" in str(info.value)


def test_hflip_with_p_1_is_torch_flip_exactly_and_p_0_is_identity():
    x = _batch()
    assert torch.equal(build_augment([{"hflip": 1.0}])(x), torch.flip(x, dims=[3]))
    flip_all = torch.ones(len(x), dtype=torch.bool)
    # folded into the affine map (as when combined with other transforms): equal up to rounding
    torch.testing.assert_close(affine(x, flip=flip_all), torch.flip(x, dims=[3]), atol=1e-5, rtol=0)
    torch.testing.assert_close(affine(x), x, atol=1e-5, rtol=0)


def test_a_shift_of_k_over_the_side_moves_a_pixel_k_pixels():
    h, w = 12, 20
    out = affine(_hot(h, w, 4, 7), shift=torch.tensor([[3 / w, -2 / h]]))  # 3 right, 2 up
    expected = _hot(h, w, 2, 10)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_rotation_is_clockwise_about_the_centre_on_square_and_oblong_images():
    x = _batch(2, 1, 10, 10)
    torch.testing.assert_close(affine(x, degrees=torch.full((2,), 90.0)), torch.rot90(x, -1, (2, 3)), atol=1e-5, rtol=0)
    # 20 × 40: pixel (9, 23) sits at (dy, dx) = (-0.5, 3.5) from the centre; a quarter turn
    # clockwise takes it to (3.5, 0.5): pixel (13, 20). Wrong aspect handling would miss it.
    out = affine(_hot(20, 40, 9, 23), degrees=torch.tensor([90.0]))
    assert out[0, 0, 13, 20] == pytest.approx(1.0, abs=1e-4)
    # the middle 20 columns see the input's 20 rows; the rest reflect them (the pixel's mirror image)
    assert out[0, 0, :, 10:30].sum() == pytest.approx(1.0, abs=1e-3)


def test_zoom_enlarges_about_the_centre():
    # scale 2: the pixel at (dy, dx) = (0.5, 1.5) from the centre of 8 × 8 (pixel (4, 5)) samples
    # the input at (0.25, 0.75): between pixels, so a blend of the four around the centre
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3:5, 3:5] = 1.0
    out = affine(x, scale=torch.tensor([2.0]))
    assert out[0, 0, 2:6, 2:6].min() > 0.2 and out[0, 0, 0, 0] == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("preset", ["moderate", "aggressive"])
def test_presets_keep_shape_dtype_device_and_range_and_change_the_batch(device, preset):
    augment = build_augment(preset)
    x = _batch(16, 3, 24, 24, device)
    torch.manual_seed(0)
    out = augment(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert 0 <= out.min() and out.max() <= 1
    assert not torch.allclose(out, x)
    torch.manual_seed(0)
    assert torch.equal(augment(x), out)  # the trial's seed fixes the augmentation
    assert not torch.equal(augment(x), out)


def test_random_translate_moves_no_further_than_its_strength():
    h = w = 20
    augment = build_augment([{"translate": 0.1}])  # at most 2 pixels each way
    x = _hot(h, w, 10, 10).repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    out = augment(x)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mass = out[:, 0].sum((1, 2))
    torch.testing.assert_close(mass, torch.ones(64), atol=1e-4, rtol=0)  # interpolation keeps the pixel
    row = (out[:, 0] * rows).sum((1, 2)) / mass
    col = (out[:, 0] * cols).sum((1, 2)) / mass
    assert (row - 10).abs().max() <= 2 + 1e-4 and (col - 10).abs().max() <= 2 + 1e-4
    assert (row - 10).abs().max() > 1 and (col - 10).abs().max() > 1  # and does move


def test_erase_fills_one_rectangle_of_2_to_40_percent():
    h, w = 20, 30
    x = _batch(64, 3, h, w) * 0.4  # no pixel is ERASE_FILL before erasing
    torch.manual_seed(0)
    out = build_augment([{"erase": 1.0}])(x)
    erased = (out == ERASE_FILL).all(1)  # N, H, W: every channel filled
    assert torch.equal(out[~erased[:, None].expand_as(out)], x[~erased[:, None].expand_as(x)])
    for mask in erased:
        rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert mask.sum() == box  # a rectangle
        assert 0.015 * h * w <= box <= 0.45 * h * w
    never = build_augment([{"erase": 1e-9}])(x)
    assert torch.equal(never, x)
