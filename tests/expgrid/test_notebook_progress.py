"""A study run from a notebook cell, in a real Jupyter kernel (ipykernel, driven by nbclient), as a
student's notebook runs it: each section is one display updated in place, not a line per ended
trial; what Ray, Tune, MLflow and the libraries print stays out of the cell (in
``<results>/ray.log``); expgrid's own lines (the study's first line, its warnings, each section's
best) stay visible; what a trial prints is kept in Ray's worker logs.

One kernel, one small study (toy objective, 3 + 2 trials of 2 epochs) run twice on a local Ray of
2 CPUs: the first run imports and starts Ray, the second finds it running.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import uuid
from pathlib import Path

import nbclient
import nbformat

REPO = Path(__file__).resolve().parents[2]

# The toy objective, printing and logging the ways a user's training code does.
CHATTY = """
import logging
import sys
import warnings

import expgrid
from trainables.toy import TOY_DEFAULTS, TOY_METRICS, toy


@expgrid.trainable(defaults=TOY_DEFAULTS, metrics=TOY_METRICS)
def train(config):
    print("TRIAL-STDOUT-{token}", flush=True)
    print("TRIAL-STDERR-{token}", file=sys.stderr, flush=True)
    logging.getLogger("chatty").warning("TRIAL-LOG-{token}")
    warnings.warn("TRIAL-WARNING-{token}")
    toy(config)
"""

# Section 2 asks for the 2 best configurations of section 1 but sweeps section 1's only swept
# value itself, so they are one: expgrid's own warning ("… has only 1 distinct scored one").
STUDY = """
study: nb-progress
trainable: chatty:train
metric: score
mode: max
defaults: {epochs: 2}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 2, 4]}
  - id: "2"
    name: X again
    inherit: {from: ["1"], top: 2}
    grid: {x: [1, 3]}
"""

# The first run imports Ray (in a fresh kernel), the second finds it imported and running.
RUN_CELL = """\
import expgrid
outcome = expgrid.run_study("study.yaml", results_dir="{results}", num_cpus=2)
"""

# After the runs: Ray's logging given back to Ray; where the trials' own output went (the worker
# logs of this kernel's local Ray, whose session folder expgrid records); Ray shut down.
AFTER_CELL = """\
import json, logging, os, warnings
from pathlib import Path
from cluster import connect, local_ray
handlers = logging.getLogger("ray").handlers
print("RAY-LOGGING", json.dumps({"handlers": len(handlers), "to_files": sum(isinstance(h, logging.FileHandler) for h in handlers),
      "import_notes_propagate": logging.getLogger("ray.widgets.util").propagate,
      "showwarning": warnings.showwarning.__module__}))
session = Path(json.loads((local_ray.records_dir() / f"{os.getpid()}.json").read_text())["session_dir"])
found = {}
for log in sorted((session / "logs").glob("worker-*")):
    text = log.read_text(errors="replace")
    for kind in ("STDOUT", "STDERR", "LOG", "WARNING"):
        if f"TRIAL-{kind}-" in text:
            found.setdefault(kind, set()).add(log.suffix)
connect.shutdown()
print("TRIAL-OUTPUT-FOUND", json.dumps({k: sorted(v) for k, v in found.items()}))
"""

# What Ray, Tune, MLflow and the libraries print when they reach a cell: Ray's log format
# ("2026-… INFO util.py:155 -- …", "WARNING …"), lines forwarded from Ray's workers ("(pid=…)",
# "(_trial_entry pid=…)"), MLflow's run links ("🏃 View run …"), Python warnings ("…Warning:"),
# tracebacks, Tune's tables ("Trial status", "Current time"), and the trials' own output.
FOREIGN = re.compile(
    r"INFO|WARNING|ERROR|pid=|🏃|View run|Warning:|Traceback|ipywidgets|Trial status|Current time|TRIAL-"
)
TRIAL_LINE = re.compile(r"\[[#-]{20}\] \d+/\d+ done")  # the terminal's progress line


class RecordingClient(nbclient.NotebookClient):
    """Keeps every message the kernel sends for a cell: the executed notebook holds only each
    display's last state (nbclient applies update_display_data in place)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.messages: list[tuple[int, str, dict]] = []

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] not in ("status", "execute_input"):
            self.messages.append((cell_index, msg["msg_type"], msg["content"]))
        return super().process_message(msg, cell, cell_index)


def test_a_notebook_cell_shows_one_updating_display_per_section_and_none_of_the_libraries_logs(tmp_path):
    token = uuid.uuid4().hex
    (tmp_path / "chatty.py").write_text(CHATTY.format(token=token))
    (tmp_path / "study.yaml").write_text(STUDY)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(RUN_CELL.format(results="results")),
                nbformat.v4.new_code_cell(RUN_CELL.format(results="results2")),
                nbformat.v4.new_code_cell(AFTER_CELL)]  # fmt: skip
    # The kernel as Jupyter starts one: this worktree's packages (and chatty.py) importable, and
    # without pytest's marker, which would keep ipykernel from forwarding what is written to the
    # process's file descriptors (C++ logs, child processes) to the cell.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(tmp_path)])
    client = RecordingClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)

    for cell in (0, 1):
        _check_run_cell(nb.cells[cell].outputs, [(kind, c) for i, kind, c in client.messages if i == cell], token)
    # Ray's lines went to the results: in a kernel without ipywidgets, Ray's notes on it as Ray
    # was imported (by the first run); Tune's lines in both.
    ray_log = (tmp_path / "results" / "ray.log").read_text()
    assert "ray.tune" in ray_log and "ray.tune" in (tmp_path / "results2" / "ray.log").read_text()
    if importlib.util.find_spec("ipywidgets") is None:
        assert "Missing packages: ['ipywidgets']" in ray_log

    after = "".join(o.get("text", "") for o in nb.cells[2].outputs)
    # After a run Ray's logging is Ray's again: its console handler back, no file of a run.
    logging_state = json.loads(after.split("RAY-LOGGING", 1)[1].splitlines()[0])
    assert logging_state["handlers"] >= 1 and logging_state["to_files"] == 0, after
    assert logging_state["import_notes_propagate"] is True and logging_state["showwarning"] == "warnings", after
    # What the trials printed, logged and warned is in Ray's worker logs: stdout in .out, the rest in .err.
    found = json.loads(after.split("TRIAL-OUTPUT-FOUND", 1)[1])
    assert found == {"STDOUT": [".out"], "STDERR": [".err"], "LOG": [".err"], "WARNING": [".err"]}, after


def _check_run_cell(outputs, sent, token):
    """One run's cell: its outputs as the executed notebook holds them, and the messages sent."""
    displays = [o for o in outputs if o.output_type == "display_data"]
    streams = "".join(o.text for o in outputs if o.output_type == "stream")
    assert [o.output_type for o in outputs if o.output_type not in ("display_data", "stream")] == []

    # One display per section, its last state: every trial done, with the HTML bar full.
    assert len(displays) == 2, [o.data.get("text/plain") for o in displays]
    first, second = (d.data["text/plain"] for d in displays)
    assert first.startswith("  1 X [####################] 3/3 done · 0 running · best score"), first
    assert second.startswith("  2 X again [####################] 2/2 done · 0 running · best score"), second
    for display, total in zip(displays, (3, 2)):
        page = display.data["text/html"]
        assert f'aria-valuenow="{total}"' in page and "width:100.0%" in page and f"{total}/{total} done" in page

    # Each display was updated in place (by its id), and nothing cleared the cell.
    shown = [c["transient"]["display_id"] for kind, c in sent if kind == "display_data"]
    updates = [c["transient"]["display_id"] for kind, c in sent if kind == "update_display_data"]
    assert len(shown) == 2 and len(set(shown)) == 2
    assert all(updates.count(display_id) >= 1 for display_id in shown) and set(updates) <= set(shown)
    assert "clear_output" not in [kind for kind, _ in sent]

    # No line per trial; expgrid's own lines are there, in order, its warning included.
    assert not TRIAL_LINE.search(streams), streams
    assert (
        streams.index("Study nb-progress: 2 sections")
        < streams.index("  1 X: best")
        < streams.index(
            "warning: section 2 carries the 2 best configurations of section 1, which has only 1 distinct scored one"
        )
        < streams.index("  2 X again: best")
    )

    # Nothing of Ray's, Tune's, MLflow's or the trials' in any output of the cell, stream or display.
    everything = streams + "".join(d.data["text/plain"] for d in displays)
    assert not FOREIGN.search(everything), FOREIGN.findall(everything)
    every_message_text = json.dumps([content for _, content in sent], ensure_ascii=False)
    assert token not in every_message_text and "pid=" not in every_message_text
