"""Checks of single study-file fields: each names the field and says what it expected.

Used by the study-file parser (``expgrid.study``); every one raises ``ConfigError`` or returns
the value. Study names and section ids name directories (``results/<study>/sections/<id>/``), so
they are :data:`SAFE_NAME`: ASCII letters, digits, ``.``, ``_`` and ``-``, not starting with ``.``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from expgrid.config import finite_number
from expgrid.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
SAFE_NAME_RULE = "a name of ASCII letters, digits, '.', '_' and '-', not starting with '.', at most 100 long"


def check_mapping(value: Any, field: str, expected: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(field, expected, value)
    return value


def check_list(value: Any, field: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise ConfigError(field, "a list", value)
    return value


def check_known_keys(raw: Mapping[str, Any], allowed: set[str], field: str) -> None:
    import difflib

    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            where = f"{field}.{key}" if field else str(key)
            raise ConfigError(where, f"a known key: one of {', '.join(sorted(allowed))}{hint}", key)


def check_string(value: Any, field: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ConfigError(field, "a non-empty string" if not allow_empty else "a string", value)
    return value


def check_safe_name(value: Any, field: str) -> str:
    """A study name or section id: it names a directory, so nothing that climbs out of one."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise ConfigError(field, SAFE_NAME_RULE, value)
    return value


def is_number(value: Any) -> bool:
    """A real number, not a bool (YAML reads yes/no as booleans); NaN and ±inf included, as
    metrics may be. Settings use ``config.finite_number``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_integer(value: Any, field: str, minimum: int | None = None) -> int:
    if not isinstance(value, int) or not finite_number(value):
        raise ConfigError(field, "an integer", value)
    if minimum is not None and value < minimum:
        raise ConfigError(field, f"an integer ≥ {minimum}", value)
    return value


def check_optional_positive(value: Any, field: str) -> int | None:
    return None if value is None else check_integer(value, field, minimum=1)
