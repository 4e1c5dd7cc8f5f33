"""``classify``'s spec: the entry point ``expgrid.trainables: classify`` (see pyproject.toml).

The trial function and the hooks are named by reference, so they are imported when called. The
defaults, metrics, smoke settings (``options.py``) and the config and data checks (``checks.py``)
import no torch, so ``expgrid validate`` checks a classify study without it (about 1.4 s saved per
process); only a pretrained torchvision model's weights lookup imports torch.
"""

from __future__ import annotations

from expgrid.trainable_spec import TrainableSpec
from trainables.classification.options import CLASSIFY_DEFAULTS, CLASSIFY_METRICS, CLASSIFY_SMOKE

_TRAIN = "trainables.classification.train"
_CHECKS = "trainables.classification.checks"  # torch-free


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
    check=f"{_CHECKS}:check_config",
    data_key=f"{_CHECKS}:dataset_key",
    load_data=f"{_TRAIN}:load_data",
    check_data=f"{_CHECKS}:check_data",
    smoke=CLASSIFY_SMOKE,
    catalogue=catalogue,
    # The coursework's per-section log file (logs/log_sec{S}_q{Q}.txt), as before the trainables
    # provided it: one format for every built-in trainable.
    section_log="trainables.reid.section_log:SectionLog",
    # `test: best`: the chosen trial on the test split (which datasets have one: test_split)
    evaluate="trainables.classification.evaluate:evaluate",
    test_split="trainables.classification.evaluate:test_split",
)
