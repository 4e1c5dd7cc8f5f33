"""``classify``'s config checks, without torch: what ``expgrid validate`` runs per trial config.

Each check reads the option tables of ``options.py``, never a builder, so a study is checked
without importing torch; a pretrained mode of a torchvision model looks its weights file up by
the name torchvision gives it, written out in ``trainables.pretrained_files``. The torch modules
re-export these checks under their old names (``models.check_model``, ``optim.check_optimizer`` …).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from expgrid.config import merge
from expgrid.errors import ConfigError, UnknownNameError
from trainables.checks import dataset_key as _dataset_key
from trainables.checks import require_int, require_mappings, require_seed
from trainables.classification.data import check_dataset, check_dataset_files
from trainables.classification.options import (
    ACTIVATIONS,
    AMP_VALUES,
    AUGMENT_FORMS,
    BUILDER_ARGS,
    CLASSIFY_DEFAULTS,
    DEFAULT_HIDDEN,
    DEFAULT_STRENGTH,
    DIAGNOSTICS_DEFAULTS,
    INITS,
    LIMITS,
    MODEL_OPTIONS,
    MODES,
    MONITORS,
    NOT_OPTIONS,
    OPTIMIZER_DEFAULTS,
    OPTIMIZERS,
    PRESETS,
    RANDOM_WEIGHTS,
    SCHEDULER_DEFAULTS,
    SCHEDULERS,
    TORCHVISION_MODELS,
    TRANSFORMS,
)
from trainables.classification.two_d import POINT_MODELS, is_point_dataset
from trainables.pretrained_files import weights_file as pretrained_weights_file


def full_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` over the defaults (so direct calls may give only what differs)."""
    return merge(CLASSIFY_DEFAULTS, config)


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ConfigError (dotted field path) for a config ``classify`` cannot run.

    Runs on the driver for every trial config before Ray starts, so it reads no data: names,
    option names and value ranges, and (for weights files) only whether they exist. The
    dataset's files are :func:`check_data`'s, which `expgrid show` does not run."""
    cfg = full_config(config)
    require_mappings(cfg, ("dataset", "model", "optimizer", "scheduler"))
    check_model(cfg["model"])
    check_mode(cfg["mode"], cfg["model"])
    check_optimizer(cfg["optimizer"])
    check_scheduler(cfg["scheduler"])
    check_dataset(cfg["dataset"])
    require_int(cfg, "batch_size", 1)
    require_int(cfg, "epochs", 1)
    require_int(cfg, "threads", 1)
    require_seed(cfg)
    clip = cfg["grad_clip"]
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < math.inf):
        raise ConfigError("grad_clip", "null or a maximum gradient norm > 0", clip)
    smoothing = cfg["label_smoothing"]
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
        raise ConfigError("label_smoothing", "a number in [0, 1)", smoothing)
    if not any(cfg["amp"] is v or (isinstance(v, str) and cfg["amp"] == v) for v in AMP_VALUES):
        raise ConfigError("amp", "true, false, bfloat16 or float16", cfg["amp"])
    check_augment(cfg["augment"])
    check_diagnostics(cfg["diagnostics"])
    check_point_inputs(cfg["dataset"], cfg["model"], cfg["augment"])


def dataset_key(config: Mapping[str, Any]) -> Hashable:
    """Configs with equal keys share one loaded dataset (the whole ``dataset`` mapping decides)."""
    return _dataset_key(full_config(config))


def check_data(config: Mapping[str, Any]) -> None:
    """The files ``config["dataset"]`` names, checked before a run (``data.check_dataset_files``)."""
    check_dataset_files(full_config(config)["dataset"])


# --- model -------------------------------------------------------------------------------------


def model_option_names(name: Any) -> tuple[str, ...]:
    """The options model ``name`` takes; UnknownNameError (field ``model.name``) for another name."""
    try:
        return MODEL_OPTIONS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("model", name, list(MODEL_OPTIONS), "model.name") from None


def model_options(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The builder's keyword arguments: the model config without ``name``, ``init``, ``weights``
    and unset (None) options."""
    return {k: v for k, v in model_cfg.items() if k not in NOT_OPTIONS and v is not None}


def hidden_widths(hidden: Sequence[int] | None, depth: int | None, width: int | None) -> list[int]:
    """mlp's hidden layer widths from ``hidden`` or ``depth`` × ``width`` (not both)."""
    if depth is None and width is None:
        return list(DEFAULT_HIDDEN if hidden is None else hidden)
    if hidden is not None:
        field = "model.depth" if depth is not None else "model.width"
        raise ConfigError(field, "either model.hidden or model.depth with model.width, not both", hidden)
    if depth is None:
        raise ConfigError("model.width", "to come with model.depth (depth hidden layers of width units)", width)
    if width is None:
        raise ConfigError("model.depth", "to come with model.width (depth hidden layers of width units)", depth)
    return [width] * depth


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _int_list(value: Any, minimum_length: int) -> bool:
    return isinstance(value, (list, tuple)) and len(value) >= minimum_length and all(_is_int(u, 1) for u in value)


def check_model(model_cfg: Mapping[str, Any]) -> None:
    """Reject a ``model`` config the builder cannot take (names, option names, value ranges).

    Reads no file: whether ``weights`` exists depends on the mode (:func:`check_mode`)."""
    options = model_option_names(model_cfg.get("name"))
    for key in model_options(model_cfg):
        if key in BUILDER_ARGS or key not in options:
            valid = [*options, "init", "weights"]
            raise ConfigError(
                f"model.{key}", f"an option of model {model_cfg['name']!r}: one of {', '.join(valid)}", key
            )
    cfg = {k: v for k, v in model_cfg.items() if v is not None}
    if "activation" in cfg and cfg["activation"] not in ACTIVATIONS:
        raise UnknownNameError("activation", cfg["activation"], list(ACTIVATIONS), "model.activation")
    if "dropout" in cfg:
        p = cfg["dropout"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
            raise ConfigError("model.dropout", "a probability in [0, 1)", p)
    if "hidden" in cfg and not _int_list(cfg["hidden"], 0):
        raise ConfigError("model.hidden", "a list of layer widths (integers >= 1)", cfg["hidden"])
    if "depth" in cfg and not _is_int(cfg["depth"], 0):
        raise ConfigError("model.depth", "a number of hidden layers (an integer >= 0)", cfg["depth"])
    if "width" in cfg and not _is_int(cfg["width"], 1):
        raise ConfigError("model.width", "a number of units per hidden layer (an integer >= 1)", cfg["width"])
    if cfg["name"] == "mlp":
        hidden_widths(cfg.get("hidden"), cfg.get("depth"), cfg.get("width"))
    if "channels" in cfg and not _int_list(cfg["channels"], 1):
        raise ConfigError("model.channels", "a non-empty list of channel counts (integers >= 1)", cfg["channels"])
    for key in ("batchnorm", "residual"):
        if key in cfg and not isinstance(cfg[key], bool):
            raise ConfigError(f"model.{key}", "true or false", cfg[key])
    if "init" in cfg and cfg["init"] not in INITS:
        raise ConfigError("model.init", f"an initialisation scheme: one of {', '.join(INITS)}", cfg["init"])
    if "weights" in cfg and not isinstance(cfg["weights"], (str, Path)):
        raise ConfigError("model.weights", f'a path to a weights file, or "{RANDOM_WEIGHTS}"', cfg["weights"])


def check_mode(mode: Any, model_cfg: Mapping[str, Any]) -> None:
    """Reject an unknown ``mode``, or a pretrained mode without the weights it needs.

    Runs before any trial starts, so it only checks that weight files exist (it does not read them)."""
    if mode not in MODES:
        raise ConfigError("mode", f"a training mode: one of {', '.join(MODES)}", mode)
    if mode == "scratch":
        return
    weights = model_cfg.get("weights")
    if weights == RANDOM_WEIGHTS:
        return
    name = model_cfg.get("name")
    model_option_names(name)
    if weights is not None and not isinstance(weights, (str, Path)):
        raise ConfigError("model.weights", f'a path to a weights file, or "{RANDOM_WEIGHTS}"', weights)
    if name in TORCHVISION_MODELS:
        # ConfigError naming model.weights when there is none (torchvision's file name, torch-free)
        pretrained_weights_file(
            name, weights, untrained=f"use mode: scratch (mode {mode} starts from pretrained weights)"
        )
        return
    if weights is None:
        raise ConfigError(
            "model.weights",
            f"for mode {mode}, a path to a torch.save'd state_dict of {name} to start from "
            f'(or "{RANDOM_WEIGHTS}" to stand in for one)',
            weights,
        )
    if not Path(weights).expanduser().is_file():
        raise ConfigError("model.weights", f"an existing file of {name} weights (a torch.save'd state_dict)", weights)


# --- optimizer, scheduler ----------------------------------------------------------------------


def check_optimizer(opt_cfg: Mapping[str, Any]) -> None:
    """Reject an ``optimizer`` config that cannot run (unknown name, out-of-range values)."""
    cfg = {**OPTIMIZER_DEFAULTS, **opt_cfg}
    if not isinstance(cfg["name"], str) or cfg["name"] not in OPTIMIZERS:
        raise UnknownNameError("optimizer", cfg["name"], list(OPTIMIZERS), "optimizer.name")
    rules = {
        "lr": ("a learning rate > 0", lambda v: v > 0),
        "weight_decay": ("a weight decay >= 0", lambda v: v >= 0),
        "momentum": ("a momentum in [0, 1)", lambda v: 0 <= v < 1),
    }
    for key, (expected, ok) in rules.items():
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ConfigError(f"optimizer.{key}", expected, value)
    if not isinstance(cfg["nesterov"], bool):
        raise ConfigError("optimizer.nesterov", "true or false", cfg["nesterov"])
    if cfg["name"] == "sgd" and cfg["nesterov"] and cfg["momentum"] == 0:
        raise ConfigError(
            "optimizer.nesterov", "false when optimizer.momentum is 0 (Nesterov needs momentum > 0)", True
        )
    unknown = sorted(set(cfg) - set(OPTIMIZER_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"optimizer.{unknown[0]}", f"an optimizer option: one of {', '.join(OPTIMIZER_DEFAULTS)}", unknown[0]
        )


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def check_scheduler(cfg: Mapping[str, Any]) -> None:
    """Reject a ``scheduler`` config that cannot run (unknown name or option, out-of-range value)."""
    unknown = sorted(set(cfg) - set(SCHEDULER_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"scheduler.{unknown[0]}", f"a scheduler option: one of {', '.join(SCHEDULER_DEFAULTS)}", unknown[0]
        )
    cfg = {**SCHEDULER_DEFAULTS, **cfg}
    if cfg["name"] not in SCHEDULERS:
        raise ConfigError("scheduler.name", f"a scheduler: one of {', '.join(SCHEDULERS)}", cfg["name"])
    rules: dict[str, tuple[str, Any]] = {
        "step_size": ("an integer number of epochs >= 1", lambda v: _is_int(v, 1)),
        "gamma": ("a factor in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
        "milestones": (
            "a list of epochs (integers >= 1)",
            lambda v: isinstance(v, (list, tuple)) and all(_is_int(m, 1) for m in v),
        ),
        "t_max": ("null or an integer number of epochs >= 1", lambda v: v is None or _is_int(v, 1)),
        "min_lr": ("a learning rate >= 0", lambda v: _number(v) and v >= 0),
        "factor": ("a factor in (0, 1)", lambda v: _number(v) and 0 < v < 1),
        "patience": ("an integer number of epochs >= 0", lambda v: _is_int(v, 0)),
        "monitor": (f"one of {', '.join(MONITORS)}", lambda v: v in MONITORS),
    }
    for key, (expected, ok) in rules.items():
        if not ok(cfg[key]):
            raise ConfigError(f"scheduler.{key}", expected, cfg[key])


# --- augmentation, diagnostics -----------------------------------------------------------------


def resolve_augment(value: Any) -> dict[str, float]:
    """The transforms ``value`` names with their strengths, e.g. ``{"hflip": 0.5, "rotate": 15.0}``.

    Raises ConfigError with the field ``augment`` (``augment[i]`` for a list item)."""
    if value is None:
        return {}
    if isinstance(value, str):
        if value in PRESETS:
            return dict(PRESETS[value])
        if value in TRANSFORMS:
            return {value: DEFAULT_STRENGTH[value]}
        raise UnknownNameError("augmentation preset or transform", value, [*PRESETS, *TRANSFORMS], "augment")
    if not isinstance(value, (list, tuple)):
        raise ConfigError("augment", AUGMENT_FORMS, value)
    out: dict[str, float] = {}
    for i, item in enumerate(value):
        field = f"augment[{i}]"
        if isinstance(item, Mapping):
            if len(item) != 1:
                raise ConfigError(field, "a transform name or a one-key mapping name: strength", dict(item))
            ((name, strength),) = item.items()
        else:
            name, strength = item, None
        if not isinstance(name, str) or name not in TRANSFORMS:
            raise UnknownNameError("augmentation transform", name, list(TRANSFORMS), field)
        if name in out:
            raise ConfigError(field, "each transform at most once", name)
        if strength is None:
            strength = DEFAULT_STRENGTH[name]
        low, high, what = LIMITS[name]
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not low <= strength <= high:
            raise ConfigError(f"{field}.{name}", f"{what} in [{low:g}, {high:g}]", strength)
        out[name] = float(strength)
    return out


def check_augment(value: Any) -> None:
    """Raise ConfigError (field ``augment``…) for a value ``augment.build_augment`` cannot build."""
    resolve_augment(value)


def check_diagnostics(cfg: Any) -> None:
    """Reject a ``diagnostics`` config: a mapping of the known switches, each true or false."""
    if not isinstance(cfg, Mapping):
        raise ConfigError("diagnostics", f"a mapping of {' / '.join(DIAGNOSTICS_DEFAULTS)} to true or false", cfg)
    for key, value in cfg.items():
        if key not in DIAGNOSTICS_DEFAULTS:
            raise ConfigError(f"diagnostics.{key}", f"one of {', '.join(DIAGNOSTICS_DEFAULTS)}", key)
        if not isinstance(value, bool):
            raise ConfigError(f"diagnostics.{key}", "true or false", value)


def check_point_inputs(dataset_cfg: Mapping[str, Any], model_cfg: Mapping[str, Any], augment: Any) -> None:
    """A point dataset needs a model that takes 2 features and no image augmentation."""
    name = dataset_cfg.get("name")
    if not is_point_dataset(name):
        return
    if model_cfg.get("name") not in POINT_MODELS:
        raise ConfigError(
            "model.name", f"{' or '.join(POINT_MODELS)} for dataset {name} (2-D points; the other models take images)",
            model_cfg.get("name"),
        )  # fmt: skip
    if any(strength > 0 for strength in resolve_augment(augment).values()):  # as build_augment decides
        raise ConfigError(
            "augment", f"none for dataset {name} (image augmentations do not apply to 2-D points)", augment
        )
