"""Nested configurations and dotted keys: the one way expgrid addresses a nested value.

A trial's config is a nested mapping (``{"optimizer": {"name": "adam", "lr": 1e-3}}``). Anywhere a
study file or ``--set`` names a parameter, a dotted key addresses the same value: ``optimizer.lr``
is ``config["optimizer"]["lr"]``. Lists are values, never descended into. Mappings may be written
either way, and mixed: ``{optimizer.lr: 0.1}`` and ``{optimizer: {lr: 0.1}}`` are the same.

A plain string where the trainable expects a mapping with a ``name`` is shorthand for that name:
``model: resnet18`` is ``model: {name: resnet18}``. The shorthand mixes with keys below it in the
same mapping: ``{model: mlp, model.hidden: [16]}`` is ``{model: {name: mlp, hidden: [16]}}``
(:func:`nest`; ``model: mlp`` with ``model.name: cnn`` names it twice and is refused).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from expgrid.errors import ConfigError, Text

# Bounds of what a study file or --set may hold. Numbers end up in JSON records, MLflow params,
# torch and numpy, none of which take NaN as a setting or an integer beyond 64 bits; the depth
# and size bounds keep every recursive step below (nest, merge, flatten, JSON) far from Python's
# recursion limit and YAML aliases from expanding into more values than anyone writes.
INT_BITS = 64
MAX_DEPTH = 32  # mappings and lists inside each other
MAX_VALUES = 1_000_000  # values in one document, counting each use of a YAML alias


def finite_number(value: Any) -> bool:
    """A real number expgrid can use as a setting: not a bool (YAML reads yes/no as booleans),
    not NaN or ±inf, an integer within 64 bits. (``study.is_number`` accepts NaN: metrics.)"""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2 ** (INT_BITS - 1)) <= value < 2 ** (INT_BITS - 1)
    return isinstance(value, float) and math.isfinite(value)


def check_values(tree: Any, field: str = "") -> None:
    """Refuse, naming the first one's path, any number that is not :func:`finite_number`, a
    mapping or list nested deeper than :data:`MAX_DEPTH`, one that contains itself (a YAML alias
    to an enclosing node), and more than :data:`MAX_VALUES` values in all."""
    budget = [MAX_VALUES]
    _check_tree(tree, field, 0, set(), budget)


def _check_tree(value: Any, field: str, depth: int, enclosing: set[int], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(field or "values", f"at most {MAX_VALUES} values in all (each use of a YAML alias counts)",
                          Text(f"more than {MAX_VALUES}"))  # fmt: skip
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not finite_number(value):
        expected = "a finite number" if isinstance(value, float) else f"an integer within {INT_BITS} bits"
        raise ConfigError(field, expected, value)
    if not isinstance(value, (Mapping, list)):
        return
    if depth >= MAX_DEPTH:
        raise ConfigError(field, f"at most {MAX_DEPTH} levels of nesting", Text(f"more than {MAX_DEPTH}"))
    if id(value) in enclosing:
        raise ConfigError(field, "a value that does not contain itself",
                          Text("a YAML alias to an enclosing node"))  # fmt: skip
    enclosing.add(id(value))
    if isinstance(value, Mapping):
        for key, child in value.items():
            _check_tree(child, _join(field, str(key)), depth + 1, enclosing, budget)
    else:
        for i, child in enumerate(value):
            _check_tree(child, f"{field}[{i}]", depth + 1, enclosing, budget)
    enclosing.discard(id(value))


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
            if isinstance(child, str):  # `model: mlp` beside `model.hidden: …`: the name shorthand
                child = node[part] = {"name": child}
            if not isinstance(child, dict):
                raise ConfigError(_join(field, ".".join(parts[: depth + 1])),
                                  "a mapping (or a name, as in `model: mlp` beside `model.hidden`)", child)  # fmt: skip
            node = child
        last = parts[-1]
        if last in node and isinstance(node[last], dict) and isinstance(value, str):
            value = {"name": value}  # `model.hidden: …` before `model: mlp`
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
        if key in out and isinstance(out[key], dict) != isinstance(value, dict) and isinstance(out[key], str | dict) \
                and isinstance(value, str | dict):  # a name and keys below it, spelled apart  # fmt: skip
            out[key] = out[key] if isinstance(out[key], dict) else {"name": out[key]}
            value = value if isinstance(value, dict) else {"name": value}
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


def lay_over(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`merge` for two layers a user writes (``defaults`` and ``--set``): a name shorthand
    below keys laid over it keeps its name (``model: mlp`` under ``--set model.hidden=[16]`` is
    ``{name: mlp, hidden: [16]}``), as the two in one mapping would (:func:`nest`)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        below = out.get(key)
        if isinstance(value, Mapping) and isinstance(below, str) and "name" not in value:
            below = {"name": below}
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            out[key] = lay_over(below, value)
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
