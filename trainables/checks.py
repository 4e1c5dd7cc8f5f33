"""Value checks shared by the built-in trainables' ``check_config`` (run before Ray starts)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from expgrid.errors import ConfigError


def require_int(config: Mapping[str, Any], key: str, minimum: int) -> int:
    """``config[key]``, which must be an integer (not a bool) of at least ``minimum``."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"an integer >= {minimum}", value)
    return value


def require_mappings(config: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Each of ``keys`` holds a mapping (a bare name was already expanded to ``{name: ...}``)."""
    for key in keys:
        if not isinstance(config[key], Mapping):
            raise ConfigError(key, "a mapping (or a name)", config[key])


def require_seed(config: Mapping[str, Any]) -> int:
    """``config["seed"]``, which must be an integer (not a bool)."""
    seed = config["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", "an integer", seed)
    return seed


def dataset_key(full_config: Mapping[str, Any]) -> str:
    """Configs with equal keys share one loaded dataset: the whole ``dataset`` mapping decides."""
    return json.dumps(full_config["dataset"], sort_keys=True, default=str)
