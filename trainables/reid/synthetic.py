"""A small fake VeRi-776 dataset on disk, for tests and smoke runs (no download needed).

:func:`write_fake_veri` writes real JPEG files with VeRi names into ``image_train``,
``image_query`` and ``image_test``. Every identity ("vehicle") is a shape (ellipse, box,
triangle, diamond) in its own colour; each image of it moves, scales and re-lights the shape a
little and adds pixel noise, and each camera has its own background grey, so a model must learn
the vehicle, not the camera. As in VeRi, training and test identities are disjoint: identities
alternate between the two (odd numbers train, even numbers test), so the test colours lie
between the training ones. Per test identity and camera, the gallery (``image_test``) holds
``images_per_camera`` images and the query folder one more.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("ellipse", "box", "triangle", "diamond")


def _shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    if kind == "ellipse":
        draw.ellipse([cx - r, cy - 0.7 * r, cx + r, cy + 0.7 * r], fill=colour)
    elif kind == "box":
        draw.rectangle([cx - r, cy - 0.6 * r, cx + r, cy + 0.6 * r], fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + 0.8 * r), (cx - r, cy + 0.8 * r)], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)


def fake_image(pid: int, camid: int, ids: int, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One image of vehicle ``pid`` (1-based) seen by camera ``camid``."""
    height, width = size
    background = 60 + 50 * (camid % 4)
    image = Image.new("RGB", (width, height), (background, background, background))
    hue = (pid - 1) / ids
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    light = rng.uniform(0.85, 1.1)
    colour = tuple(int(np.clip(c * 255 * light, 0, 255)) for c in (red, green, blue))
    cx = width * (0.5 + rng.uniform(-0.08, 0.08))
    cy = height * (0.5 + rng.uniform(-0.08, 0.08))
    r = min(height, width) * 0.3 * rng.uniform(0.9, 1.1)
    _shape(ImageDraw.Draw(image), SHAPES[(pid - 1) % len(SHAPES)], cx, cy, r, colour)
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_fake_veri(
    root: str | Path,
    ids: int = 12,
    cameras: int = 3,
    images_per_camera: int = 3,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> Path:
    """Write a fake VeRi-layout dataset under ``root`` and return ``root``.

    ``ids``: identities in all (odd-numbered ones train, even-numbered ones test; at least 2).
    ``size``: (height, width) of every image. Training images: ``images_per_camera`` per
    identity and camera; the gallery the same for test identities, plus one query image each."""
    if ids < 2 or cameras < 2 or images_per_camera < 1:
        raise ValueError("need ids >= 2 (train and test), cameras >= 2 (true matches), images_per_camera >= 1")
    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = {name: root / name for name in ("image_train", "image_query", "image_test")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    frame = 0
    for pid in range(1, ids + 1):
        train = pid % 2 == 1
        for camid in range(1, cameras + 1):
            per_folder = (
                [("image_train", images_per_camera)]
                if train
                else [("image_test", images_per_camera), ("image_query", 1)]
            )
            for folder, count in per_folder:
                for k in range(count):
                    frame += 1
                    name = f"{pid:04d}_c{camid:03d}_{frame:08d}_{k}.jpg"
                    fake_image(pid, camid, ids, size, rng).save(folders[folder] / name, quality=92)
    return root
