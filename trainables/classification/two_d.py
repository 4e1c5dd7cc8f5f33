"""2-D point datasets for ``classify``: ``moons``, ``circles`` and ``spirals`` (generated, no download).

Each sample is a point (x₁, x₂), float32, with a class 0 or 1; the pool holds ``n_samples``
points, half of each class (the counts differ by at most one), all fixed by ``dataset.seed``:

* ``moons``: scikit-learn's ``make_moons`` — two interleaved half circles of radius 1,
  the upper one centred on (0, 0) (class 0), the lower on (1, 0.5) (class 1); Gaussian noise of
  std ``noise`` (default 0.1) on both coordinates.
* ``circles``: scikit-learn's ``make_circles`` — an outer circle of radius 1 (class 0) around an
  inner one of radius ``CIRCLES_FACTOR`` = 0.5 (class 1); noise std default 0.05.
* ``spirals``: two interleaved arms. Arm k ∈ {0, 1} (the class) is the curve
  r = t, θ = t + k·π for t ∈ [``SPIRAL_T_MIN``, ``SPIRAL_T_MAX``] = [0.5, 3π] (1.5 turns), so
  a sample is x = (t·cos θ, t·sin θ) + ε with t ~ Uniform[0.5, 3π] and ε ~ N(0, noise²·I)
  (noise default 0.2). Along any ray from the origin the two arms alternate π apart.

The coordinates are used as they are (no standardisation): the moons and circles lie within
about [-1.5, 2.5], the spirals within about ±9.5.

Splits (``data.split_shuffled``, as for the other datasets): the pool is shuffled with
``dataset.seed``; the first ``train_size`` points train, the next ``val_size`` validate, the rest
(``n_samples − train_size − val_size``, at least one) are the test split. ``n_samples`` null:
``train_size + 2 × val_size`` (a test split as large as the validation split).

Inputs have 2 features, so only ``model: mlp`` takes them (any activation, ``sine`` included),
and image augmentations do not apply: ``checks.check_point_inputs`` says so before a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from expgrid.errors import ConfigError

POINT_DATASETS = ("moons", "circles", "spirals")
DEFAULT_NOISE = {"moons": 0.1, "circles": 0.05, "spirals": 0.2}  # std of the Gaussian noise, data units
CIRCLES_FACTOR = 0.5  # radius of the inner circle (the outer one's is 1)
SPIRAL_T_MIN = 0.5  # t (= radius, radians of turn) where an arm starts ...
SPIRAL_T_MAX = 3 * math.pi  # ... and ends: 1.5 turns
POINT_MODELS = ("mlp",)  # the models that take a 2-feature input (the others take images)


def is_point_dataset(name: Any) -> bool:
    return name in POINT_DATASETS


def pool_size(cfg: Mapping[str, Any]) -> int:
    """Points generated: ``n_samples``, or ``train_size + 2 × val_size`` when null."""
    n = cfg.get("n_samples")
    return int(cfg["train_size"]) + 2 * int(cfg["val_size"]) if n is None else int(n)


def noise_of(cfg: Mapping[str, Any]) -> float:
    noise = cfg.get("noise")
    return DEFAULT_NOISE[cfg["name"]] if noise is None else float(noise)


def check_points(cfg: Mapping[str, Any]) -> None:
    """``n_samples`` and ``noise`` of a point dataset (``cfg``: the full ``dataset`` mapping)."""
    n = cfg.get("n_samples")
    need = int(cfg["train_size"]) + int(cfg["val_size"])
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(
                "dataset.n_samples", "an integer number of points, or null (train_size + 2 × val_size)", n
            )
        if n <= need:
            raise ConfigError(
                "dataset.n_samples",
                f"more than train_size + val_size = {need} points (the rest is the test split), or null",
                n,
            )
    noise = cfg.get("noise")
    if noise is not None and (
        isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < math.inf
    ):
        raise ConfigError(
            "dataset.noise", f"a noise std >= 0, or null ({DEFAULT_NOISE[cfg['name']]} for {cfg['name']})", noise
        )


def generate(name: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of dataset ``name``: float32 (n, 2) and int64 labels (n,), in no class order."""
    if name == "spirals":
        return spirals(n, noise, seed)
    from sklearn.datasets import make_circles, make_moons

    if name == "moons":
        x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
    elif name == "circles":
        x, y = make_circles(n_samples=n, noise=noise, factor=CIRCLES_FACTOR, random_state=seed)
    else:
        raise ValueError(f"not a point dataset: {name!r} (one of {', '.join(POINT_DATASETS)})")
    return x.astype(np.float32), y.astype(np.int64)


def spirals(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved arms (module docstring): r = t, θ = t + k·π, t ~ U[T_MIN, T_MAX], + N(0, noise²)."""
    rng = np.random.default_rng(seed)
    k = rng.permutation(np.arange(n) % 2).astype(np.int64)
    t = rng.uniform(SPIRAL_T_MIN, SPIRAL_T_MAX, size=n)
    theta = t + k * math.pi
    x = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1) + noise * rng.standard_normal((n, 2))
    return x.astype(np.float32), k
