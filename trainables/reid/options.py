"""``reid``'s option tables, without torch: what ``expgrid validate`` checks a config against.

The defaults, metrics and smoke overrides of the spec and the names a config may give (models,
optimizers, samplers, augmentations). The torch modules (``models.py``, ``optim.py``,
``samplers.py``, ``transforms.py`` …) import these tables and register exactly these names;
``tests/trainables/test_light_validate.py`` asserts each registry's names equal the table here, so
they cannot drift.
"""

from __future__ import annotations

import copy
import re
from typing import Any

DATASET_DEFAULTS: dict[str, Any] = {
    "name": "veri776",
    "root": None,  # the folder holding image_train/, image_query/, image_test/
    "height": 224,  # pixels: images are resized to height × width
    "width": 224,
    "preload_mb": 256,  # decode the whole dataset once on the driver when it fits in this many MB (0: never)
}
DATASETS = ("veri776",)  # data.DATASETS' names
SPLITS = {"train": "image_train", "query": "image_query", "gallery": "image_test"}
VERI_LAYOUT = (
    "a folder in the VeRi-776 layout: <root>/image_train/ (training images), <root>/image_query/ (queries), "
    "<root>/image_test/ (the gallery), each holding images named <vehicle id>_c<camera id>_<anything>.jpg, "
    "e.g. 0002_c002_00030600_0.jpg"
)
MIN_SIDE = 16  # pixels: the smallest image side accepted (a ResNet reduces 32×)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")

MODEL_DEFAULTS: dict[str, Any] = {
    "name": "resnet50_fc512",
    "pretrained": True,  # start from ImageNet weights (a local file; never downloaded)
    "weights": None,  # path of those weights; None: torchvision's cache file for the architecture
}
# Model names: torchvision architectures (features → Linear) and ResNets with an fc512 embedding.
PLAIN_MODELS = ("mobilenet_v3_small", "vgg16", "resnet18", "resnet34", "resnet50", "vit_b_16")
RESNETS = ("resnet18", "resnet34", "resnet50")
MODELS = (*PLAIN_MODELS, *(f"{arch}_fc512" for arch in RESNETS))

OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "name": "amsgrad",
    "lr": 3e-4,  # learning rate
    "weight_decay": 5e-4,  # L2 coefficient, added to the gradient
    "momentum": 0.9,  # sgd and rmsprop only
}
SCHEDULE_DEFAULTS: dict[str, Any] = {
    "milestones": [20, 40],  # epochs (1-based) after which the learning rate is multiplied by gamma
    "gamma": 0.1,
}
OPTIMIZERS = ("amsgrad", "adam", "sgd", "rmsprop")  # optim.OPTIMIZERS registers one each

LOSS_DEFAULTS: dict[str, Any] = {
    "xent_weight": 1.0,  # λ_xent: weight of the cross-entropy (identity classification) loss
    "htri_weight": 1.0,  # λ_htri: weight of the batch-hard triplet loss
    "margin": 0.3,  # triplet margin, in embedding (Euclidean distance) units
    # ε of the cross-entropy: 0 as the coursework's train.sh (no --label-smooth); 0.1 is
    # torchreid's label smoothing (its --label-smooth).
    "label_smoothing": 0.0,
}

SAMPLER_DEFAULTS = {
    "name": "random",
    "instances": 4,  # K: images per identity in a batch (identity sampler only)
}
SAMPLERS = ("random", "identity")  # samplers.SAMPLERS' names

DEFAULT_AUGMENTATIONS = ["random2dtranslation", "hflip"]  # the coursework's default
# transforms.AUGMENTATIONS' names (each with its torchvision transform there)
AUGMENTATIONS = (
    "random2dtranslation",
    "hflip",
    "random_perspective",
    "color_jitter",
    "color_aug",
    "pca_lighting",
    "random_erasing",
    "random_erasing_tv",
)

RANKS = (1, 5, 10, 20)  # the CMC ranks reported (metrics.py)

# The coursework's train.sh: 224×224, AMSGrad lr 3e-4, weight decay 5e-4, 10 epochs, batch 64 / 100,
# multi-step schedule at epochs 20 and 40 (so unused in 10 epochs), seed 1.
REID_DEFAULTS: dict[str, Any] = {
    "dataset": copy.deepcopy(DATASET_DEFAULTS),
    "model": copy.deepcopy(MODEL_DEFAULTS),
    "optimizer": copy.deepcopy(OPTIMIZER_DEFAULTS),
    "lr_schedule": copy.deepcopy(SCHEDULE_DEFAULTS),
    "loss": copy.deepcopy(LOSS_DEFAULTS),
    "sampler": copy.deepcopy(SAMPLER_DEFAULTS),
    "augmentations": list(DEFAULT_AUGMENTATIONS),  # names, see transforms.py; [] for none
    "epochs": 10,
    "train_batch": 64,  # images per optimizer step, over all workers together
    "test_batch": 100,  # images per forward pass when extracting query / gallery features
    "eval_freq": 0,  # also evaluate every this many epochs; 0: only where needed (see evaluation_due)
    "seed": 1,
    "loader_workers": 2,  # DataLoader processes per rank reading and augmenting images (0: none)
    "threads": 0,  # torch intra-op CPU threads per rank; 0: leave as is (Ray sets it from the trial's CPUs)
    "workers": 1,  # data-parallel ranks (processes) per trial
    "sync_bn": False,  # with workers > 1: BatchNorm statistics over the global batch (GPUs only)
    "gpu_per_worker": 0,  # GPUs each rank reserves when workers > 1 (set 1 on a GPU cluster)
}
REID_METRICS = ("epoch", "loss_xent", "loss_htri", "train_accuracy", "seconds", "mAP") + tuple(
    f"rank{k}" for k in RANKS
)
# Overrides that make a trial tiny (CI smoke runs: `expgrid run reid_veri776 --smoke`), on a
# dataset such as synthetic.write_fake_veri's.
REID_SMOKE: dict[str, Any] = {
    "dataset": {"height": 32, "width": 32},
    "model": {"pretrained": False},
    "epochs": 1,
    "train_batch": 16,
    "test_batch": 32,
    "eval_freq": 1,
    "loader_workers": 0,
    "gpu_per_worker": 0,  # smoke runs are for CPU machines too (CI)
}
