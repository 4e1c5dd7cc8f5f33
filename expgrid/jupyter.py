"""Whether this process is a Jupyter kernel (a notebook, JupyterLab, VS Code, Colab): there a
run shows its progress as one updating display per section and keeps Ray's log lines out of the
cell (``expgrid.progress``, ``expgrid.logfiles``)."""

from __future__ import annotations

import sys


def in_kernel() -> bool:
    """True in an IPython kernel: its shell has a ``kernel`` (a terminal IPython's has none).
    IPython is only looked at when something has imported it already: a kernel always has, and
    a plain ``python`` or ``expgrid run`` does not pay for importing it."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    if get_ipython is None:
        return False
    try:
        shell = get_ipython()
    except Exception:  # a half-imported or stubbed IPython: not a kernel we can display in
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None
