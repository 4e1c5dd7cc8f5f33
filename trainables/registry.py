"""The trainable registry: what ``trainable:`` in a study file may name.

A registered trainable is a :class:`TrainableSpec`: the function (see ``expgrid.reporter`` for
the protocol), the parameters it accepts with their defaults, the metrics it reports, an optional
``check`` that rejects bad values (unknown model / dataset / optimizer names) before Ray starts,
and an optional data loader whose result is loaded once on the driver, put in Ray's object
store and shared by every trial of a section.

``trainable: package.module:function`` names a user's own function instead; decorate it with
:func:`expgrid.trainable` to declare its parameters and metrics so they are checked too.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from expgrid.errors import ConfigError
from expgrid.registry import Registry


@dataclasses.dataclass(frozen=True)
class TrainableSpec:
    name: str
    fn: Callable[..., Any]
    # Accepted parameters and their defaults (nested). None: accept anything, check nothing.
    defaults: Mapping[str, Any] | None = None
    # Metric names the trainable reports each epoch. None: not known in advance.
    metrics: tuple[str, ...] | None = None
    # Raises ConfigError (field = dotted parameter path) for values it cannot run.
    check: Callable[[dict[str, Any]], None] | None = None
    # Data shared by trials: key(config) says which configs share data, load(config) builds it.
    data_key: Callable[[dict[str, Any]], Hashable] | None = None
    load_data: Callable[[dict[str, Any]], Any] | None = None
    # Checks the data files a config names (exist, expected structure, readable image headers),
    # cheaply and without loading them; raises ConfigError (field: the config key naming the
    # files, e.g. dataset.path). Run by `expgrid validate` and `expgrid run` (expgrid.datacheck),
    # not by `expgrid show`, which works without the data; ``check`` must not touch files.
    check_data: Callable[[dict[str, Any]], None] | None = None
    # Where the function comes from, so Ray workers can import it ("module:function").
    ref: str = ""
    # Config overrides that make a trial tiny, for `expgrid run --smoke` (None: no smoke mode).
    smoke: Mapping[str, Any] | None = None

    @property
    def takes_data(self) -> bool:
        return self.load_data is not None


TRAINABLES: Registry[TrainableSpec] = Registry("trainable")


def register_trainable(
    name: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    metrics: tuple[str, ...] | list[str] | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
    data_key: Callable[[dict[str, Any]], Hashable] | None = None,
    load_data: Callable[[dict[str, Any]], Any] | None = None,
    check_data: Callable[[dict[str, Any]], None] | None = None,
    smoke: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` under ``name`` (names are unique)."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = TrainableSpec(
            name=name,
            fn=fn,
            defaults=defaults,
            metrics=tuple(metrics) if metrics is not None else None,
            check=check,
            data_key=data_key if load_data is not None else None,
            load_data=load_data,
            check_data=check_data,
            ref=f"{fn.__module__}:{fn.__qualname__}",
            smoke=smoke,
        )
        TRAINABLES.register(name, spec)
        fn.__expgrid_spec__ = spec  # type: ignore[attr-defined]
        return fn

    return decorator


def trainable(
    *, defaults: Mapping[str, Any] | None = None, metrics: tuple[str, ...] | list[str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a user trainable's parameters and metrics without registering a name."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__expgrid_spec__ = TrainableSpec(  # type: ignore[attr-defined]
            name=fn.__qualname__,
            fn=fn,
            defaults=defaults,
            metrics=tuple(metrics) if metrics is not None else None,
            ref=f"{fn.__module__}:{fn.__qualname__}",
        )
        return fn

    return decorator


def _load_builtins() -> None:
    # Imported here, not at module import, so that `import trainables.registry` stays light.
    import trainables.builtin  # noqa: F401


def list_trainables(pattern: str = "*") -> list[str]:
    _load_builtins()
    return TRAINABLES.names(pattern)


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
FUNCTION_REF = re.compile(f"({_DOTTED}):({_DOTTED})")  # package.module:function (or Class.method)


def resolve_trainable(ref: str, field: str = "trainable") -> TrainableSpec:
    """A registered name, or ``package.module:function`` (importable from the current directory)."""
    if ":" not in ref:
        _load_builtins()
        return TRAINABLES.get(ref, field)
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
    spec = getattr(fn, "__expgrid_spec__", None)
    if spec is None:
        spec = TrainableSpec(name=ref, fn=fn, ref=ref)
    return dataclasses.replace(spec, ref=ref)


def import_ref(ref: str) -> Callable[..., Any]:
    """Import ``module:qualname`` (used on Ray workers)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
