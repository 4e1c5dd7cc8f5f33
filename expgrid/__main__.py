"""``python -m expgrid``: the same as the ``expgrid`` console script."""

from expgrid.cli import entry

entry()
