"""The README's notebook example, executed in a real Jupyter kernel (nbclient + ipykernel): an
inline digits study run with ``expgrid.run``, its results shown, a plot, and the same study run a
second time in the same kernel into a new results directory (the kernel's Ray is up already: a
warm run). Prints both runs' wall times (measured inside the kernel, around ``expgrid.run``)
and their ratio: what a kernel saves from its second run on.

    .venv/bin/python bench/notebook_run.py [--out DIR] [--workdir DIR] [--keep]

``--out DIR`` writes there what the cells displayed: ``curves.png`` (the plot cell's PNG),
``summary.html`` (the results cell's HTML) and ``notebook.ipynb`` (the executed notebook).
The kernel runs in ``--workdir`` (default: a temporary directory, removed unless ``--keep``),
so results go to ``<workdir>/results/…``.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The cells the README shows (the timing lines are the benchmark's own).
CELLS = [
    "import expgrid",
    """study = {
    "study": "digits-notebook",
    "trainable": "classify",
    "metric": "val_accuracy", "mode": "max",
    "defaults": {
        "dataset": {"name": "digits", "train_size": 1000, "val_size": 500},
        "model": {"name": "mlp", "hidden": [64, 32]},
        "optimizer": {"name": "adam", "lr": 1e-3},
        "batch_size": 32, "epochs": 8,
    },
    "resources": {"cpu": 1},
    "sections": [
        {"id": "1", "name": "Learning rate", "grid": {"optimizer.lr": [1e-4, 1e-3, 1e-2]}},
        {"id": "2", "name": "Dropout", "grid": {"model.dropout": [0.0, 0.2, 0.5]}},
    ],
}
import time; _start = time.perf_counter()
results = expgrid.run(study)
_first = time.perf_counter() - _start""",
    "results",
    'results.plot("1")',
    """_start = time.perf_counter()
again = expgrid.run(study, results_dir="results/digits-notebook-again")  # the kernel's Ray is up already
_second = time.perf_counter() - _start
print(f"BENCH first {_first:.2f} second {_second:.2f}")""",
]


def _notebook():
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    return nb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write curves.png, summary.html and notebook.ipynb here")
    parser.add_argument("--workdir", type=Path, help="the kernel's working directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary working directory")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run")
    args = parser.parse_args()

    import nbclient
    import nbformat

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="expgrid-notebook-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    for name in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    nb = _notebook()
    started = time.perf_counter()
    try:
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=args.timeout,
                                resources={"metadata": {"path": str(workdir)}}).execute(env=env)  # fmt: skip
    finally:
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.out / "notebook.ipynb")
    total = time.perf_counter() - started

    printed = "".join(o.get("text", "") for c in nb.cells for o in c.outputs if o.output_type == "stream")
    found = re.search(r"BENCH first ([0-9.]+) second ([0-9.]+)", printed)
    if found is None:
        print("error: the notebook printed no timings; see the executed notebook (--out)", file=sys.stderr)
        return 1
    first, second = float(found.group(1)), float(found.group(2))
    print("notebook (digits, 2 sections x 3 trials x 8 epochs), in one kernel:")
    print(f"  first run  (starts Ray):       {first:6.2f} s")
    print(f"  second run (the kernel's Ray): {second:6.2f} s")
    print(f"  ratio first / second:          {first / second:6.2f}")
    print(f"  whole notebook (kernel start to end): {total:.1f} s")

    if args.out:
        html = next(o.data["text/html"] for o in nb.cells[2].outputs if o.output_type == "execute_result")
        (args.out / "summary.html").write_text(html)
        png = next(o.data["image/png"] for o in nb.cells[3].outputs if "image/png" in o.get("data", {}))
        (args.out / "curves.png").write_bytes(base64.b64decode(png))
        print(f"  wrote {args.out / 'curves.png'}, {args.out / 'summary.html'}, {args.out / 'notebook.ipynb'}")
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
