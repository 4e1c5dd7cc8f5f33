"""Shared fixtures: one real local Ray per test session, and small study files."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

# Before any test module imports Ray: a local Ray on 127.0.0.1 only (cluster/local_ray.py).
from cluster import local_ray  # noqa: F401

# Token authentication on for every Ray of the test session (the session's, ray_session's, the
# heads and Cluster()s tests start, their subprocess drivers), with a token of this session
# given in the environment, so that no test reads or writes ~/.ray/auth_token. The default,
# a token Ray generates into ~/.ray, is tested by tests/reliability/test_network.py.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` (pyproject.toml) are skipped without a CUDA GPU; torch is imported
    only when such a test was collected."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once for the whole test session, as `expgrid run`
    starts one (loopback only, token auth on)."""
    import ray

    from cluster import connect

    connect.connect(num_cpus=2)
    yield ray
    connect.shutdown()


@pytest.fixture
def write_study(tmp_path):
    """Write a study file from YAML text and return its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
