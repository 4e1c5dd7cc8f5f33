"""Nested configurations and dotted keys: the one way expgrid addresses a nested value.

A trial's config is a nested mapping (``{"optimizer": {"name": "adam", "lr": 1e-3}}``). Anywhere a
study file or ``--set`` names a parameter, a dotted key addresses the same value: ``optimizer.lr``
is ``config["optimizer"]["lr"]``. Lists are values, never descended into. Mappings may be written
either way, and mixed: ``{optimizer.lr: 0.1}`` and ``{optimizer: {lr: 0.1}}`` are the same.

A plain string where the trainable expects a mapping with a ``name`` is shorthand for that name:
``model: resnet18`` is ``model: {name: resnet18}``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from expgrid.errors import ConfigError


def nest(mapping: Mapping[str, Any], field: str = "") -> dict[str, Any]:
    """Expand dotted keys into nested dicts (recursively); refuse conflicting spellings."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(_join(field, str(key)), "a non-empty string key", key)
        parts = key.split(".")
        if any(not p for p in parts):
            raise ConfigError(_join(field, key), "a dotted key without empty parts", key)
        value = nest(value, _join(field, key)) if isinstance(value, Mapping) else value
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(_join(field, ".".join(parts[: depth + 1])), "a mapping", child)
            node = child
        last = parts[-1]
        if last in node and isinstance(node[last], dict) and isinstance(value, dict):
            node[last] = _merge_disjoint(node[last], value, _join(field, ".".join(parts)))
        elif last in node:
            raise ConfigError(_join(field, key), "each key given once", value, show_got=False)
        else:
            node[last] = value
    return out


def _merge_disjoint(a: dict[str, Any], b: dict[str, Any], field: str) -> dict[str, Any]:
    """Merge two spellings of one mapping; a value given by both is an error."""
    out = dict(a)
    for key, value in b.items():
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _merge_disjoint(out[key], value, _join(field, key))
        elif key in out:
            raise ConfigError(_join(field, key), "each key given once", value, show_got=False)
        else:
            out[key] = value
    return out


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` → ``{"a.b": 1, "c": [1, 2]}``."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = _join(prefix, key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``override`` laid over it, mapping by mapping."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def get_path(mapping: Mapping[str, Any], path: str, default: Any = None) -> Any:
    node: Any = mapping
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def set_path(mapping: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = mapping
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def expand_names(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the ``model: resnet18`` → ``model: {name: resnet18}`` shorthand where ``schema``
    (the trainable's defaults) has a mapping with a ``name`` at that key."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        expected = schema.get(key)
        if isinstance(expected, Mapping) and "name" in expected and isinstance(value, str):
            out[key] = {"name": value}
        elif isinstance(expected, Mapping) and isinstance(value, Mapping):
            out[key] = expand_names(value, expected)
        else:
            out[key] = value
    return out


def unknown_paths(config: Mapping[str, Any], schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths in ``config`` that ``schema`` does not have.

    A mapping in the schema that is empty accepts any keys below it (free-form options)."""
    found: list[str] = []
    for key, value in config.items():
        path = _join(prefix, key)
        if key not in schema:
            found.append(path)
        elif isinstance(value, Mapping) and isinstance(schema[key], Mapping) and schema[key]:
            found.extend(unknown_paths(value, schema[key], path))
    return found


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
