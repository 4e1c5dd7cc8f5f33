"""``classify``'s option tables, without torch: what ``expgrid validate`` checks a config against.

The defaults, metrics and smoke overrides of the spec, and per model / optimizer / scheduler /
augmentation the names and options a config may give. The torch modules (``models.py``,
``optim.py``, ``augment.py`` …) import these tables rather than keep their own, so there is one
list of each. Two tables restate what torch code defines: ``MODEL_OPTIONS`` (the keyword
parameters of each model builder) and ``TORCHVISION_MODELS`` (``backbones.ARCHITECTURES``);
``tests/trainables/test_light_validate.py`` asserts they equal what that code derives, so they
cannot drift. Importing torch costs about 1.4 s per process, which a check that only reads names
and numbers should not pay.
"""

from __future__ import annotations

import copy
from typing import Any

from trainables.classification.data import DATASET_DEFAULTS

MODEL_DEFAULTS: dict[str, Any] = {
    "name": "mlp",
    # mlp: units per hidden layer, input side first; None: [128, 64] unless depth and width are set
    "hidden": None,
    "depth": None,  # mlp: number of hidden layers of `width` units (set both, instead of `hidden`)
    "width": None,  # mlp: units per hidden layer with `depth`
    "activation": None,  # mlp: hidden activation (an ACTIVATIONS name); None: relu
    "residual": None,  # mlp: identity skip around hidden blocks of equal width; None: false
    "channels": None,  # simple_cnn: output channels of each conv block; None: [32, 64, 128]
    # BatchNorm (mlp: BatchNorm1d before each hidden activation; CNNs: after each conv);
    # None: the model's default (mlp false, CNNs true); torchvision models have no such option
    "batchnorm": None,
    "dropout": 0.0,  # probability of zeroing a unit (mlp: hidden units; CNNs and torchvision: before the head)
    "init": "default",  # default | zeros | kaiming | xavier (init.py)
    "weights": None,  # pretrained weights for mode linear_probe / fine_tune (modes.py)
}
NOT_OPTIONS = ("name", "init", "weights")  # model config keys create_model handles itself
BUILDER_ARGS = ("input_shape", "num_classes", "pretrained", "weights")  # builder parameters no config sets
DEFAULT_HIDDEN = (128, 64)  # mlp's hidden widths when neither `hidden` nor depth/width is given

# torchvision architectures (backbones.ARCHITECTURES), each a `classify` model taking only dropout
# and loading pretrained weights itself.
TORCHVISION_MODELS = ("mobilenet_v3_small", "vgg16", "resnet18", "resnet34", "resnet50", "vit_b_16")
# Model name → the options its builder takes (its keyword parameters but BUILDER_ARGS), in the
# builder's order; models.MODELS registers one builder per name.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("hidden", "depth", "width", "dropout", "batchnorm", "activation", "residual"),
    "simple_cnn": ("channels", "dropout", "batchnorm"),
    "resnet9": ("dropout", "batchnorm"),
    "resnet20": ("dropout", "batchnorm"),
    **{arch: ("dropout",) for arch in TORCHVISION_MODELS},
}
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu", "elu", "sine")  # models.ACTIVATIONS' names
INITS = ("default", "zeros", "kaiming", "xavier")  # init.py's schemes

MODES = ("scratch", "linear_probe", "fine_tune")
RANDOM_WEIGHTS = "random"  # model.weights value standing in for pretrained weights (no file read)

OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "name": "adam",
    "lr": 1e-3,  # learning rate (step size)
    "weight_decay": 0.0,  # L2 coefficient (decoupled for adamw)
    "momentum": 0.9,  # sgd only; 0: plain SGD
    "nesterov": False,  # sgd only: Nesterov momentum (needs momentum > 0)
}
OPTIMIZERS = ("sgd", "adam", "adamw", "amsgrad", "rmsprop")  # optim.OPTIMIZERS registers one each

SCHEDULER_DEFAULTS: dict[str, Any] = {
    "name": "none",  # none | step | multistep | cosine | reduce_on_plateau
    "step_size": 30,  # step: epochs between decays
    "gamma": 0.1,  # step, multistep: factor applied at each decay
    "milestones": [],  # multistep: epochs after which the rate decays
    "t_max": None,  # cosine: epochs of the half cosine period; null: the trial's epochs
    "min_lr": 0.0,  # cosine: the rate at t_max; reduce_on_plateau: the lowest rate
    "factor": 0.1,  # reduce_on_plateau: factor applied at each reduction
    "patience": 10,  # reduce_on_plateau: epochs without improvement tolerated before reducing
    "monitor": "val_loss",  # reduce_on_plateau: the metric watched (…accuracy: higher is better)
}
SCHEDULERS = ("none", "step", "multistep", "cosine", "reduce_on_plateau")
# The metrics reduce_on_plateau may watch (all of them reported every epoch).
MONITORS = (
    "val_loss",
    "val_accuracy",
    "val_top5_accuracy",
    "val_error",
    "val_top5_error",
    "train_loss",
    "train_accuracy",
)

GEOMETRIC = ("hflip", "translate", "rotate", "zoom")
TRANSFORMS = (*GEOMETRIC, "erase")
DEFAULT_STRENGTH: dict[str, float] = {"hflip": 0.5, "translate": 0.1, "rotate": 10.0, "zoom": 0.1, "erase": 0.5}
# (lowest, highest, what the strength is) for checking a config.
LIMITS: dict[str, tuple[float, float, str]] = {
    "hflip": (0.0, 1.0, "a probability"),
    "translate": (0.0, 0.5, "a maximum shift as a fraction of the image side"),
    "rotate": (0.0, 180.0, "a maximum angle in degrees"),
    "zoom": (0.0, 0.9, "a maximum scale deviation (0.1: scale in [0.9, 1.1])"),
    "erase": (0.0, 1.0, "a probability"),
}
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "moderate": {"hflip": 0.5, "translate": 0.1, "rotate": 10.0, "zoom": 0.1},
    "aggressive": {"hflip": 0.5, "translate": 0.2, "rotate": 25.0, "zoom": 0.25, "erase": 0.5},
}
AUGMENT_FORMS = "a preset (none, moderate, aggressive) or a list of transforms, e.g. [hflip, {rotate: 15}]"

DIAGNOSTICS_DEFAULTS: dict[str, Any] = {
    "grad_norms": False,  # per-layer mean gradient L2 norm per epoch → grad_norms.json
    "confusion_matrix": True,  # validation confusion matrix → confusion_matrix.csv, per_class_accuracy.csv
    "decision_boundary": True,  # 2-D inputs: predicted class over a grid → decision_boundary.png, .npz
}

AMP_VALUES = (False, True, "bfloat16", "float16")

CLASSIFY_DEFAULTS: dict[str, Any] = {
    "dataset": copy.deepcopy(DATASET_DEFAULTS),
    "model": copy.deepcopy(MODEL_DEFAULTS),
    "mode": "scratch",  # scratch | linear_probe | fine_tune (modes.py; pretrained: model.weights)
    "optimizer": copy.deepcopy(OPTIMIZER_DEFAULTS),
    "scheduler": copy.deepcopy(SCHEDULER_DEFAULTS),  # learning rate per epoch (schedules.py)
    "batch_size": 32,  # samples per optimizer step
    "epochs": 10,  # passes over the training set
    "seed": 0,  # torch seed: initialisation, shuffling, dropout (the split has dataset.seed)
    "threads": 1,  # torch intra-op CPU threads for this trial (match the trial's cpu resource)
    "grad_clip": None,  # max L2 norm of the gradient (all trainable parameters together); null: none
    "label_smoothing": 0.0,  # in [0, 1): weight of the uniform target in the training loss
    "amp": False,  # CUDA mixed precision: true (bfloat16 if supported, else float16) | bfloat16 | float16
    "augment": "none",  # training-batch augmentation (augment.py)
    "diagnostics": copy.deepcopy(DIAGNOSTICS_DEFAULTS),  # artifact files (diagnostics.py)
}
CLASSIFY_METRICS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_top5_accuracy",
    "val_error",
    "val_top5_error",
    "lr",
    "seconds",
    "ms_per_image",
    "iterations",
    "parameters",
    "trainable_parameters",
    "first_layer_weight_abs",
    "first_layer_grad_abs",
)
# Overrides that make a trial tiny (`expgrid run STUDY --smoke`, CI): a few samples, one epoch,
# no loader processes, and random weights standing in for pretrained ones (which cannot be
# downloaded on a test machine). Swept parameters keep their values.
CLASSIFY_SMOKE: dict[str, Any] = {
    "dataset": {"train_size": 64, "val_size": 32, "loader_workers": 0},
    "model": {"weights": "random"},
    "epochs": 1,
    "threads": 1,
}
