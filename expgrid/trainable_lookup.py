"""Finding a trainable: what ``trainable:`` in a study file may name.

- **A name** (``classify``, ``toy``, a plugin's): an entry point of the group
  :data:`ENTRY_POINT_GROUP` in some installed distribution's metadata, as pyproject.toml declares
  the built-in ones::

      [project.entry-points."expgrid.trainables"]
      classify = "trainables.classification.spec:SPEC"

  The entry point names a :class:`~expgrid.trainable_spec.TrainableSpec` (or a trial function,
  decorated with ``expgrid.trainable`` or not). Only the entry point of the name asked for is
  loaded, so resolving ``toy`` imports nothing of ``classify``. Names registered in this process
  (:func:`register_trainable`: tests, notebooks) come first.
- **``package.module:function``**: a user's own function, importable from the current
  directory; decorate it with ``expgrid.trainable`` to declare its parameters and metrics.
- **A function itself** (a study given as a dict to ``expgrid.run``, e.g. one defined in a
  notebook cell): :func:`function_trainable`. One Ray workers cannot import by name travels to
  them by value (``expgrid.trainable_spec.ships_by_value``).
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from expgrid.errors import ConfigError, Text, UnknownNameError
from expgrid.registry import Registry
from expgrid.trainable_spec import TrainableSpec, spec_of

ENTRY_POINT_GROUP = "expgrid.trainables"

_REGISTERED: Registry[TrainableSpec] = Registry("trainable")  # this process's own
_LOADED: dict[str, TrainableSpec] = {}  # entry points already loaded, by name

_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
FUNCTION_REF = re.compile(f"({_DOTTED}):({_DOTTED})")  # package.module:function (or Class.method)


def register_trainable(name: str, **fields: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` under ``name`` in this process (``fields``: TrainableSpec's);
    installed trainables come through entry points instead."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = TrainableSpec(name=name, fn=fn, **fields)
        _REGISTERED.register(name, spec)
        fn.__expgrid_spec__ = spec  # type: ignore[attr-defined]
        return fn

    return decorator


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value not in (e.value for e in found.get(ep.name, [])):  # one distribution seen twice
            found.setdefault(ep.name, []).append(ep)
    return found


def list_trainables(pattern: str = "*") -> list[str]:
    """Every name a study may give: installed (entry points) and registered here."""
    import fnmatch

    names = set(_entry_points()) | set(_REGISTERED.names())
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def resolve_trainable(ref: str, field: str = "trainable") -> TrainableSpec:
    """A name (registered here or installed), or ``package.module:function``; ConfigError naming
    ``field`` when it is neither."""
    if ":" not in ref:
        return _named(ref, field)
    match = FUNCTION_REF.fullmatch(ref)
    if match is None:  # e.g. ":fn", "pkg:", "a:b:c", "..pkg:fn": nothing importlib should see
        raise ConfigError(field, "a registered name or package.module:function (Python names)", ref)
    module_name, attr = match.groups()
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # a user's module next to the study, as `python -m` would find it
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(field, "an importable module in package.module:function", f"{ref} ({e})") from None
    except Exception as e:  # the user's module raised while importing: name it, not a traceback
        raise ConfigError(field, "a module that imports without errors", f"{ref} ({type(e).__name__}: {e})") from None
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(field, f"a function named {attr!r} in module {module_name}", ref)
    spec = spec_of(fn, ref)
    assert spec is not None  # callable
    return _with_ref(spec, ref)


def _with_ref(spec: TrainableSpec, ref: str) -> TrainableSpec:
    import dataclasses

    return dataclasses.replace(spec, ref=ref)


def _named(name: str, field: str) -> TrainableSpec:
    if isinstance(name, str) and name in _REGISTERED:
        return _REGISTERED.get(name)
    if name in _LOADED:
        return _LOADED[name]
    found = _entry_points()
    if name not in found:
        raise UnknownNameError("trainable", name, list_trainables(), field)
    if len(found[name]) > 1:
        values = " and ".join(f"{ep.value} ({_distribution(ep)})" for ep in found[name])
        raise ConfigError(field, f"a trainable name one installed package defines ({name!r} is defined twice)",
                          Text(values))  # fmt: skip
    ep = found[name][0]
    try:
        obj = ep.load()
    except Exception as e:  # a broken plugin: name it and its entry point, not a traceback
        raise ConfigError(field, f"an installed trainable that loads without errors ({ENTRY_POINT_GROUP} entry point)",
                          Text(f"{name} = {ep.value} ({_distribution(ep)}): {type(e).__name__}: {e}")) from None  # fmt: skip
    spec = spec_of(obj, name)
    if spec is None:
        raise ConfigError(field, f"an entry point naming a TrainableSpec or a function ({ENTRY_POINT_GROUP})",
                          Text(f"{name} = {ep.value}: {type(obj).__name__}"))  # fmt: skip
    _LOADED[name] = spec
    return spec


def _distribution(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"



def function_trainable(fn: Any, field: str = "trainable") -> TrainableSpec:
    """The spec of a function given as ``trainable:`` (decorated with ``expgrid.trainable`` or
    not), named ``module:qualname`` (``__main__:train`` for a notebook's). One that must travel
    by value is pickled here, as Ray will pickle it, so that a function Ray cannot ship (it
    holds a lock, an open file, a CUDA tensor) is refused in one line before anything starts."""
    from expgrid.trainable_spec import ships_by_value

    name = f"{getattr(fn, '__module__', None) or '__main__'}:{getattr(fn, '__qualname__', type(fn).__name__)}"
    spec = spec_of(fn, name)
    if spec is None:
        raise ConfigError(field, "a registered name, package.module:function, or a function", Text(repr(fn)))
    spec = _with_ref(spec, name)
    if ships_by_value(spec):
        import cluster.local_ray  # noqa: F401 - first: it sets what Ray reads at import (a local Ray on 127.0.0.1)

        # isort: split
        from ray import cloudpickle  # what Ray ships functions with

        try:
            cloudpickle.dumps(spec.fn)
        except Exception as e:  # noqa: BLE001 - whatever the pickler refuses, named in one line
            why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            raise ConfigError(field, "a function Ray can send to its workers (cloudpickle), or one in a module "
                              "named as trainable: \"package.module:function\"", Text(f"{name} ({why})")) from None
    return spec
