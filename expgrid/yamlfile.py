"""YAML as expgrid reads it from users: a study file's text, or the value of a ``--set``.

PyYAML's safe loader (no Python tags), stricter where it used to change a study silently or
crash: a key given twice in one mapping is refused (PyYAML keeps the last one), and nesting
deeper than :data:`expgrid.config.MAX_DEPTH` is refused while composing (PyYAML's composer
recurses once per level and ends in a RecursionError). Every problem is one
:class:`~expgrid.errors.ConfigError` whose field is the line: ``line 7: expected …, got …``.
"""

from __future__ import annotations

from typing import Any

import yaml

from expgrid.config import MAX_DEPTH
from expgrid.errors import ConfigError, Text

MERGE_TAG = "tag:yaml.org,2002:merge"  # `<<: *base` may repeat keys of the mapping it merges


class _Refused(yaml.MarkedYAMLError):
    """A rule of this loader, raised from inside PyYAML and turned into a ConfigError by load."""

    def __init__(self, mark: yaml.Mark, expected: str, got: object):
        super().__init__(problem=f"expected {expected}", problem_mark=mark)
        self.expected = expected
        self.got = got


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # the document itself is the first level
                mark = self.peek_event().start_mark
                raise _Refused(mark, f"at most {MAX_DEPTH} levels of nesting", Text(f"more than {MAX_DEPTH}"))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = first_line.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader refuses it with its own message
                if earlier is not None:
                    raise _Refused(key_node.start_mark, "each key once in a mapping",
                                   Text(f"{key!r} again (first on line {earlier})"))  # fmt: skip
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """The document ``text`` holds (None when empty), or ConfigError naming the line."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except _Refused as e:
        raise ConfigError(_line(e.problem_mark.line), e.expected, e.got) from None
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (control codes, …)
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise ConfigError(_line(text.count("\n", 0, e.position)), "printable text", Text(f"character U+{code:04X}")) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        what = " ".join(str(p) for p in (getattr(e, "context", None), getattr(e, "problem", None)) if p) or str(e)
        raise ConfigError(_line(mark.line) if mark else "YAML", "valid YAML", what) from None
    except RecursionError:  # a path through PyYAML this loader does not bound; never seen
        raise ConfigError("YAML", f"at most {MAX_DEPTH} levels of nesting", Text("deeper")) from None


def _line(index: int) -> str:
    return f"line {index + 1}"
