"""What ``expgrid run`` is asked for beyond the study file: :class:`RunOptions`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TextIO


@dataclasses.dataclass
class RunOptions:
    results_dir: Path | None = None  # default: results/<study name>
    tracking_uri: str | None = None  # default: $MLFLOW_TRACKING_URI, else SQLite under results
    address: str | None = None  # a running Ray cluster; None starts a local one
    connect_timeout: float = 30.0  # seconds to find a Ray cluster at `address`
    sections: tuple[str, ...] | None = None  # only these section ids
    max_concurrent: int | None = None
    resume: bool = False  # continue an interrupted section's Tune experiment (else rerun it)
    # Where Tune and Train keep trial checkpoints: a directory every node can reach (shared
    # filesystem) or an object-store URI (s3://…, gs://…); default <results>/tune (one node).
    storage: str | None = None
    num_cpus: int | None = None  # for a local Ray only
    num_gpus: int | None = None
    stream: TextIO | None = None  # where progress and summaries go (stdout)
