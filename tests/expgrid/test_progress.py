"""The live section line: redrawn in place on a terminal (at most 5× a second, always when a
trial ends), one printed line per ended trial in a log, and a closing note on its last state."""

from __future__ import annotations

import io
import types

import pytest

from expgrid import progress
from expgrid.progress import ProgressLine

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
