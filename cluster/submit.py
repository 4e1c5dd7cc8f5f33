"""Run a study on the Ray cluster this runs on: the script for ``ray submit``.

    ray submit ray_cluster.yaml cluster/submit.py -- search_spaces/fashion_mnist.yaml [expgrid run options]

``ray submit`` copies this file to the head node's home directory and runs it there with the
cluster's Python, where ``ray_cluster.yaml`` installed expgrid. It runs ``expgrid run`` with

- ``--address auto``: the Ray cluster on this node;
- ``--tracking-uri``: the MLflow tracking server ``ray_cluster.yaml`` starts on the head,
  ``$MLFLOW_TRACKING_URI`` if set, else http://127.0.0.1:5000;

and the arguments given after ``--``, which win over both (``--tracking-uri sqlite:///…``,
``--address HOST:PORT``). It runs from ``$EXPGRID_PROJECT_DIR`` when that is set (the cluster's
setup sets it to the project's copy), so that ``search_spaces/x.yaml``, relative data paths and
the default ``results/`` are those of the project.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

DEFAULT_TRACKING_URI = "http://127.0.0.1:5000"  # `mlflow server` on the head (ray_cluster.yaml)


def expgrid_argv(args: list[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The ``expgrid`` command line for ``args`` (a study and ``expgrid run`` options)."""
    tracking_uri = environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    # Given first: argparse keeps the last value of an option, so the caller's own win.
    return ["run", "--address", "auto", "--tracking-uri", tracking_uri, *args]


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    project = os.environ.get("EXPGRID_PROJECT_DIR")
    if project:
        project = os.path.abspath(os.path.expanduser(project))
        os.chdir(project)
        sys.path.insert(0, project)  # the project's code first, as `python -m expgrid` run there
    from expgrid.cli import main as expgrid_main

    return expgrid_main(expgrid_argv(args))


if __name__ == "__main__":
    sys.exit(main())
