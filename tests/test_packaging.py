"""Installing expgrid into an environment that already has its own torch keeps that torch.

A user's Colab or cluster venv has a torch built for its CUDA; ``pip install -e .`` must not
replace it with another multi-GB build while it is in pyproject's range. The test makes a fresh
venv holding a stand-in ``torch`` 2.13.0 and ``torchvision`` 0.28.0 (tiny wheels written here:
only their names and versions matter to pip's resolver), asks pip what ``pip install -e .`` would
install (``--dry-run --report``: it resolves every dependency's metadata from the package index
and installs nothing), and checks that torch and torchvision are not among them. Without a
reachable package index the test skips, saying so.

The venv's pip is first brought to :data:`PIP`: the pip that ``python -m venv`` bundles (23.2 with
Python 3.11.7) downloads every dependency's whole wheel (~350 MB) to read its metadata, a newer
one reads the metadata files the index serves (PEP 658); both keep an installed torch that
satisfies the requirement (pip's default upgrade strategy, "only-if-needed").
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib  # Python 3.11+, as CI's venv
from packaging.requirements import Requirement  # pytest's own dependency
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
INSTALLED = {"torch": "2.13.0", "torchvision": "0.28.0"}  # the oldest releases pyproject allows
PIP = "pip==26.3"
# What pip prints when it cannot reach an index (as opposed to a resolution that failed).
NETWORK_ERRORS = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|Name or service not known"
    r"|Network is unreachable|Connection refused|Read timed out|ConnectTimeoutError|Could not fetch URL"
)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal valid wheel (PEP 427) of an empty distribution ``name`` ``version``."""
    info = f"{name}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: expgrid-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},{_record_hash(text.encode())},{len(text.encode())}\n" for path, text in files.items())
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def pip(venv: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    # Short network timeouts: with no index reachable, pip's default retries take minutes.
    command = [str(venv / "bin" / "python"), "-m", "pip", "--timeout", "20", "--retries", "1", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv sees only its own packages
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=venv.parent, env=env)


def installed_versions(venv: Path) -> dict[str, str]:
    listing = pip(venv, "list", "--format", "json", timeout=120)
    assert listing.returncode == 0, listing.stderr
    return {row["name"].lower(): row["version"] for row in json.loads(listing.stdout)}


def skip_if_unreachable(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        unreachable = NETWORK_ERRORS.search(done.stdout + done.stderr)
        if unreachable:
            pytest.skip(f"needs the package index to {what}; pip: {unreachable.group(0)}")


def test_installing_expgrid_keeps_a_torch_in_range_that_the_environment_has(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    done = pip(venv, "install", "--quiet", PIP, timeout=300)
    skip_if_unreachable(done, f"install {PIP}")
    assert done.returncode == 0, done.stderr
    wheels = [write_wheel(tmp_path, name, version) for name, version in INSTALLED.items()]
    done = pip(venv, "install", "--no-index", "--no-deps", *map(str, wheels), timeout=120)
    assert done.returncode == 0, done.stderr
    assert {n: installed_versions(venv)[n] for n in INSTALLED} == INSTALLED

    # The project's own packaging files in a copy, so that preparing its metadata writes nothing
    # (an egg-info) into the repository.
    project = tmp_path / "expgrid"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)

    report = tmp_path / "report.json"
    resolved = pip(venv, "install", "--dry-run", "--report", str(report), "-e", str(project), timeout=900)
    skip_if_unreachable(resolved, "resolve expgrid's dependencies")
    if resolved.returncode != 0:
        pytest.fail(f"pip could not resolve `pip install -e .`:\n{resolved.stderr[-4000:]}")
    to_install = {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    assert "expgrid" in to_install and "ray" in to_install  # the report is of a real resolution
    assert not {"torch", "torchvision"} & set(to_install), {
        n: to_install[n] for n in ("torch", "torchvision") if n in to_install
    }
    # pip weighed pyproject's torch requirements against what the venv has, and kept it
    for name, version in INSTALLED.items():
        kept = re.search(rf"^Requirement already satisfied: {name}\b.*\({re.escape(version)}\)$", resolved.stdout, re.M)
        assert kept, f"pip did not report keeping {name} {version}:\n{resolved.stdout[-4000:]}"
    assert {n: installed_versions(venv)[n] for n in INSTALLED} == INSTALLED  # the dry run changed nothing


def test_constraints_pin_every_dependency_inside_its_range():
    """constraints.txt (what CI installs) pins each of pyproject's dependencies, test extras
    included, to one version that pyproject's range allows."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]
    pins: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            (spec,) = pin.specifier
            assert spec.operator == "==", f"constraints.txt: {line}: expected an exact version"
            assert canonicalize_name(pin.name) not in pins, f"constraints.txt: {pin.name} twice"
            pins[canonicalize_name(pin.name)] = spec.version
    for requirement in requirements:
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"constraints.txt pins no version of {requirement.name}"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={version} not in {requirement}"
        )
