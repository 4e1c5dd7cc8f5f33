"""The live section line: redrawn in place on a terminal (at most 5× a second, always when a
trial ends), one printed line per ended trial in a log, and a closing note on its last state; in
a Jupyter notebook one display per section, updated in place on the same terms."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from expgrid import progress
from expgrid.progress import ProgressLine

REPO = Path(__file__).resolve().parents[2]
CLEAR = "\r\033[K"  # carriage return + erase line: how the terminal line is redrawn


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch):
    """The module's clock, set by the test (the line's elapsed seconds and its redraw limit)."""
    now = types.SimpleNamespace(t=1000.0)
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(monotonic=lambda: now.t))
    return now


def update(line: ProgressLine, *, trial_ended: bool, done=0, running=0, failed=0, retries=0, best=""):
    line.update(done=done, running=running, failed=failed, retries=retries, best=best, trial_ended=trial_ended)


def test_text_shows_counts_bar_best_and_elapsed_seconds(clock):
    line = ProgressLine("3.1 lr", total=4, metric="val_accuracy", stream=io.StringIO())
    clock.t += 7.4
    update(line, done=1, running=2, best="0.9312", trial_ended=False)
    assert line.text() == "  3.1 lr [#####---------------] 1/4 done · 2 running · best val_accuracy 0.9312 · 7s"


def test_failed_and_retried_counts_appear_only_when_nonzero(clock):
    line = ProgressLine("a", total=2, metric="score", stream=io.StringIO())
    update(line, done=2, running=0, trial_ended=False)
    assert "failed" not in line.text() and "retried" not in line.text() and "best" not in line.text()
    update(line, done=2, running=0, failed=1, retries=3, trial_ended=False)
    assert " · 1 failed · 3 retried" in line.text()
    assert line.text().startswith("  a [####################] 2/2 done · 0 running · 1 failed")


def test_a_section_of_no_trials_draws_an_empty_bar(clock):
    line = ProgressLine("empty", total=0, metric="score", stream=io.StringIO())
    assert "[--------------------] 0/0 done" in line.text()


def test_a_log_gets_one_line_per_ended_trial_and_nothing_in_between(clock):
    log = io.StringIO()
    line = ProgressLine("1 base", total=3, metric="score", stream=log)
    update(line, running=2, trial_ended=False)  # a trial started: nothing printed
    clock.t += 5
    update(line, done=1, running=1, best="0.5", trial_ended=True)
    update(line, done=1, running=1, best="0.5", trial_ended=False)
    clock.t += 5
    update(line, done=2, running=0, failed=1, best="0.7", trial_ended=True)
    assert log.getvalue().splitlines() == [
        "  1 base [######--------------] 1/3 done · 1 running · best score 0.5 · 5s",
        "  1 base [#############-------] 2/3 done · 0 running · 1 failed · best score 0.7 · 10s",
    ]
    assert CLEAR not in log.getvalue()


def test_a_terminal_line_is_redrawn_in_place_at_most_five_times_a_second(clock):
    tty = Terminal()
    line = ProgressLine("2 wd", total=2, metric="loss", stream=tty)
    update(line, running=1, trial_ended=False)
    assert tty.getvalue() == CLEAR + "  2 wd [--------------------] 0/2 done · 1 running · 0s"
    clock.t += 0.1
    update(line, running=2, trial_ended=False)  # too soon after the last draw: not redrawn
    assert tty.getvalue().count(CLEAR) == 1
    clock.t += 0.05
    update(line, done=1, running=1, trial_ended=True)  # a trial ended: always redrawn
    assert tty.getvalue().count(CLEAR) == 2
    clock.t += 0.3
    update(line, done=1, running=1, best="0.1", trial_ended=False)  # 0.3 s since the last draw
    assert tty.getvalue().count(CLEAR) == 3
    assert "\n" not in tty.getvalue()
    assert (
        tty.getvalue().rsplit(CLEAR, 1)[1] == "  2 wd [##########----------] 1/2 done · 1 running · best loss 0.1 · 0s"
    )


def test_closing_a_terminal_line_ends_it_and_a_note_redraws_it_with_the_note(clock):
    tty = Terminal()
    line = ProgressLine("s", total=1, metric="score", stream=tty)
    update(line, done=1, trial_ended=True)
    line.close()
    assert tty.getvalue().endswith("1/1 done · 0 running · 0s\n")

    tty = Terminal()
    line = ProgressLine("s", total=2, metric="score", stream=tty)
    update(line, done=1, running=1, trial_ended=True)
    line.close("interrupted (Ctrl-C)")
    last = tty.getvalue().rsplit(CLEAR, 1)[1]
    assert last == "  s [##########----------] 1/2 done · 1 running · 0s · interrupted (Ctrl-C)\n"


def test_closing_a_log_line_adds_a_line_only_for_a_note(clock):
    log = io.StringIO()
    line = ProgressLine("s", total=2, metric="score", stream=log)
    update(line, done=2, trial_ended=True)
    line.close()
    assert log.getvalue().count("\n") == 1  # the ended trial's line only, no empty line
    line.close("stopped: disk full")
    assert (
        log.getvalue().splitlines()[-1] == "  s [####################] 2/2 done · 0 running · 0s · stopped: disk full"
    )
    assert CLEAR not in log.getvalue()


# ---------------------------------------------------------------------------------------------
# In a Jupyter notebook: one display per section, updated in place (the kernel itself:
# tests/expgrid/test_notebook_progress.py)


class Displays:
    """IPython's ``display(obj, display_id=True)`` and its handle's ``update(obj)``, recorded:
    what the cell would show, as (call, text/plain, text/html)."""

    def __init__(self):
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, view, display_id):
        assert display_id is True
        self.calls.append(("display", *self._bundle(view)))
        return self

    def update(self, view):
        self.calls.append(("update", *self._bundle(view)))

    @staticmethod
    def _bundle(view):
        bundle = view._repr_mimebundle_()
        assert set(bundle) == {"text/plain", "text/html"} and repr(view) == bundle["text/plain"]
        return bundle["text/plain"], bundle["text/html"]


def test_a_notebook_section_appears_at_its_start_and_its_text_is_the_terminal_line(clock):
    shown = Displays()
    cell = progress.NotebookProgress("3.1 lr", total=4, metric="val_accuracy", display=shown)
    assert shown.calls == [("display", "  3.1 lr [--------------------] 0/4 done · 0 running · 0s", cell.html())]
    line = ProgressLine("3.1 lr", total=4, metric="val_accuracy", stream=io.StringIO())
    clock.t += 7.4
    for view in (cell, line):
        update(view, done=1, running=2, failed=1, retries=2, best="0.9312", trial_ended=True)
    assert shown.calls[-1][1] == line.text()
    assert (
        line.text()
        == "  3.1 lr [#####---------------] 1/4 done · 2 running · 1 failed · 2 retried · best val_accuracy 0.9312 · 7s"
    )


def test_a_notebook_display_is_updated_at_most_five_times_a_second_and_whenever_a_trial_ends(clock):
    shown = Displays()
    cell = progress.NotebookProgress("2 wd", total=2, metric="loss", display=shown)
    clock.t += 0.1
    update(cell, running=1, trial_ended=False)  # 0.1 s after it was shown: not redrawn
    assert [c[0] for c in shown.calls] == ["display"]
    clock.t += 0.15
    update(cell, running=2, trial_ended=False)  # 0.25 s since the last draw
    clock.t += 0.05
    update(cell, done=1, running=1, best="0.3", trial_ended=True)  # a trial ended: always
    clock.t += 0.1
    update(cell, done=1, running=1, best="0.2", trial_ended=False)  # 0.1 s after it: not redrawn
    assert [c[0] for c in shown.calls] == ["display", "update", "update"]
    assert shown.calls[-1][1] == "  2 wd [##########----------] 1/2 done · 1 running · best loss 0.3 · 0s"
    clock.t += 0.25
    update(cell, done=1, running=1, best="0.2", trial_ended=False)
    assert len(shown.calls) == 4 and "best loss 0.2" in shown.calls[-1][1]
    cell.close()  # the last state, whenever it comes
    assert [c[0] for c in shown.calls] == ["display", "update", "update", "update", "update"]


def test_a_notebook_display_closes_on_its_last_state_with_the_note(clock):
    shown = Displays()
    cell = progress.NotebookProgress("s", total=2, metric="score", display=shown)
    update(cell, done=1, running=1, trial_ended=True)
    clock.t += 0.01
    cell.close("interrupted (Ctrl-C)")  # redrawn however soon after the last draw
    text, page = shown.calls[-1][1:]
    assert text == "  s [##########----------] 1/2 done · 1 running · 0s · interrupted (Ctrl-C)"
    assert "1/2 done · 1 running · 0s · interrupted (Ctrl-C)</div>" in page


def test_the_notebook_html_has_a_bar_of_the_share_done_and_the_same_facts_as_the_line(clock):
    cell = progress.NotebookProgress("1 <base> & co", total=3, metric="score", display=Displays())
    clock.t += 12
    update(cell, done=2, running=1, failed=1, best="0.7 (x=<2>)", trial_ended=True)
    page = cell.html()
    assert page.startswith('<div class="expgrid-progress"') and page.endswith("</div>")
    assert "<b>1 &lt;base&gt; &amp; co</b>" in page  # label and facts are text, not markup
    assert "2/3 done · 1 running · 1 failed · best score 0.7 (x=&lt;2&gt;) · 12s</div>" in page
    assert 'aria-valuemax="3" aria-valuenow="2"' in page and "width:66.7%" in page
    running = re.search(r"background:(#[0-9a-f]{6})\"></span>", page).group(1)
    cell.close()
    finished = re.search(r"background:(#[0-9a-f]{6})\"></span>", cell.html()).group(1)
    cell.close("stopped: disk full")
    stopped = re.search(r"background:(#[0-9a-f]{6})\"></span>", cell.html()).group(1)
    assert len({running, finished, stopped}) == 3  # running, finished and stopped short look apart


def test_a_notebook_section_of_no_trials_has_an_empty_bar(clock):
    cell = progress.NotebookProgress("empty", total=0, metric="score", display=Displays())
    assert "width:0.0%" in cell.html() and "0/0 done" in cell.html()


class TerminalShell:  # IPython in a terminal: no kernel
    pass


class KernelShell:  # ipykernel's ZMQInteractiveShell has the kernel it runs in
    kernel = object()


@pytest.mark.parametrize(("shell", "kernel"), [(None, False), (TerminalShell(), False), (KernelShell(), True)])
def test_a_jupyter_kernel_is_told_by_the_shell_ipython_has(monkeypatch, shell, kernel):
    from expgrid import jupyter

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert jupyter.in_kernel() is kernel


def test_outside_a_kernel_the_progress_is_the_line_and_ipython_is_not_imported():
    code = (
        "import sys, io\n"
        "from expgrid import progress\n"
        "line = progress.section_progress('1 a', 2, 'score')\n"
        "other = progress.section_progress('1 a', 2, 'score', io.StringIO())\n"
        "assert type(line) is type(other) is progress.ProgressLine, (line, other)\n"
        "assert 'IPython' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
