"""Errors a user can act on.

Every problem found in a study file becomes one :class:`StudyFileError` whose message names the
file, the field path, the rule and the value, e.g.::

    search_spaces/demo.yaml: sections[1].grid.optimizer.lr: expected a non-empty list of values, got []

The CLI prints that one line and exits with :data:`EXIT_INVALID` before Ray is started.
"""

from __future__ import annotations

import os

EXIT_INVALID = 2  # bad study file or bad command-line value
EXIT_FAILED = 1  # the study ran but could not finish (e.g. every trial of a section failed)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)


class ExpgridError(Exception):
    """Base class of expgrid's own errors.

    In IPython and Jupyter one shows as the line the CLI prints (``error: FILE: FIELD: expected
    …, got …``), not a traceback: IPython shows what an exception's ``_render_traceback_``
    returns instead of its traceback. ``EXPGRID_TRACEBACK=1`` brings the traceback back."""

    shown_as = "error"  # the word before the message, as the CLI prints it
    hint = ""  # what to do next, shown after the message (set by whoever raises it on)

    def one_line(self) -> str:
        text = f"{self.shown_as}: {self}" + (f"; {self.hint}" if self.hint else "")
        return " ".join(text.split())  # a trial's error text may span lines

    @property
    def _render_traceback_(self):  # noqa: ANN202 - IPython's hook: hasattr, then call
        if os.environ.get("EXPGRID_TRACEBACK"):
            raise AttributeError("_render_traceback_")  # hasattr is False: IPython's own traceback
        return lambda: [self.one_line()]


class Text(str):
    """A ``got`` shown as written, not as a Python repr: ``got more than 32 levels``."""

    def __repr__(self) -> str:
        return str(self)


class ConfigError(ExpgridError):
    """A value is not what a rule expects; ``field`` is a dotted/indexed path into the config."""

    def __init__(self, field: str, expected: str, got: object = None, *, show_got: bool = True):
        self.field = field
        self.expected = expected
        self.got = got
        self.show_got = show_got
        super().__init__(self._text())

    def _text(self) -> str:
        text = f"{self.field}: expected {self.expected}" if self.field else f"expected {self.expected}"
        if self.show_got:
            text += f", got {self.got!r}"
        return text

    def within(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` prepended to its field path."""
        field = f"{prefix}.{self.field}" if self.field and prefix else (prefix or self.field)
        return ConfigError(field, self.expected, self.got, show_got=self.show_got)


class StudyFileError(ExpgridError):
    """A study file (or an override of it) breaks a rule; the message starts with the file."""

    def __init__(self, path: str, error: ConfigError):
        self.path = path
        self.error = error
        super().__init__(f"{path}: {error}")


class OptionError(StudyFileError):
    """A command-line option (``--set``, ``--results``, …) breaks a rule; the message starts with
    the option instead of the file: ``--set: epochs: expected an integer ≥ 1, got -1``."""

    def __init__(self, option: str, error: ConfigError):
        super().__init__(option, error)
        self.option = option


class UnknownNameError(ConfigError):
    """A name is not in a registry; the message lists the closest matches and all valid names."""

    def __init__(self, kind: str, name: object, valid: list[str], field: str = ""):
        import difflib

        close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        self.kind = kind
        super().__init__(field, f"a registered {kind}: one of {', '.join(sorted(valid))}{hint}", name)


class StudyFailed(ExpgridError):
    """The study could not go on (e.g. every trial of a section failed or diverged)."""

    shown_as = "study stopped"


class ClusterUnreachable(StudyFailed):
    """No Ray cluster could be attached at the ``--address`` given; the message names it (exit
    1: the address may well be right and the cluster down or starting)."""

    shown_as = "error"

    def __init__(self, address: str, problem: str):
        self.address = address
        super().__init__(f"--address {address}: {problem}")


class ResultsError(ExpgridError):
    """A results directory cannot be read (``expgrid report``); the message starts with it."""

    def __init__(self, path: str, expected: str, got: object):
        self.path = path
        super().__init__(f"{path}: expected {expected}, got {got}")
