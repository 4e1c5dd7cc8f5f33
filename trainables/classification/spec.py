"""``classify``'s spec: the entry point ``expgrid.trainables: classify`` (see pyproject.toml).

The trial function and the hooks are named by reference, so they are imported when called. The
defaults, metrics and smoke settings still come from ``train.py``, and with them torch: they live
beside the code that reads them. Moving them (and the checks) into torch-free modules would let
``expgrid validate`` check a classify study without importing torch.
"""

from __future__ import annotations

from expgrid.trainable_spec import TrainableSpec
from trainables.classification.train import CLASSIFY_DEFAULTS, CLASSIFY_METRICS, CLASSIFY_SMOKE

_TRAIN = "trainables.classification.train"


def catalogue() -> dict[str, list[str]]:
    """The names a classify config may give (``expgrid list``)."""
    from trainables.classification import data, models, optim

    return {
        "datasets": data.DATASETS.names(),
        "models": models.MODELS.names(),
        "optimizers": optim.OPTIMIZERS.names(),
    }


SPEC = TrainableSpec(
    name="classify",
    fn=f"{_TRAIN}:classify",
    defaults=CLASSIFY_DEFAULTS,
    metrics=CLASSIFY_METRICS,
    check=f"{_TRAIN}:check_config",
    data_key=f"{_TRAIN}:dataset_key",
    load_data=f"{_TRAIN}:load_data",
    check_data=f"{_TRAIN}:check_data",
    smoke=CLASSIFY_SMOKE,
    catalogue=catalogue,
    # The coursework's per-section log file (logs/log_sec{S}_q{Q}.txt), as before the trainables
    # provided it: one format for every built-in trainable.
    section_log="trainables.reid.section_log:SectionLog",
    # `test: best`: the chosen trial on the test split (which datasets have one: test_split)
    evaluate="trainables.classification.evaluate:evaluate",
    test_split="trainables.classification.evaluate:test_split",
)
