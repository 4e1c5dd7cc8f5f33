"""Shared fixtures: one real local Ray per test session, and small study files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local Ray; token auth only warns
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once for the whole test session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False, dashboard_host="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def write_study(tmp_path):
    """Write a study file from YAML text and return its path."""

    def write(text: str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
