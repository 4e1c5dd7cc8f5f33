"""The README's first two commands are the ones CI and newcomers run."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_test_command():
    ci_lines = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines[-1] == _commands()[1]
    # before it, only system packages the tests need (Chromium for the MLflow UI test)
    assert all("apt-get install" in line or line.startswith("SUDO=") for line in ci_lines[:-1])


def test_the_demo_command_runs_the_embedded_demo():
    demo = _commands()[0]
    assert "pip install" in demo and "expgrid run digits_demo" in demo
    assert (REPO / "search_spaces" / "digits_demo.yaml").exists()


def test_both_commands_install_the_versions_ci_tested():
    """The README's commands (and so CI) install the exact versions of constraints.txt."""
    for command in _commands()[:2]:
        pip_install = command.split("&&")[1]
        assert "pip install" in pip_install and " -c constraints.txt " in f"{pip_install} ", command
    assert (REPO / "constraints.txt").is_file()
