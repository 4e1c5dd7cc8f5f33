"""The Python API a notebook (or a script) uses: ``expgrid.run``, ``expgrid.open``, ``expgrid.shutdown``.

``run(study, **options)`` takes a study file, the name of one in ``search_spaces/``, or a dict
written in a cell, checked by exactly the rules of a file (errors name ``<inline>`` and the
field). Its ``trainable`` may be a function defined in the notebook: Ray workers cannot import
a notebook's function by name, so it travels to them by value (cloudpickle, as Ray ships its
tasks); one that cannot be pickled is refused in one line before anything starts.

Every error a user can act on shows as one line in IPython/Jupyter (``expgrid.errors``). An
interrupt of the kernel (SIGINT) stops the study as Ctrl-C stops ``expgrid run``: the running
trials are recorded ``interrupted``, the report of what finished is written, and
:class:`expgrid.interrupts.Interrupted` shows as one line naming ``expgrid.open(...)`` for the
partial results and ``resume=True`` to continue. A second interrupt while the first stop is
under way ends the kernel's process at once, as a second Ctrl-C ends ``expgrid run``: everything
the trials reported is on disk already.

A second ``run`` in the same process uses the Ray the first one started (a warm start);
:func:`shutdown` ends it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from expgrid.errors import ConfigError, OptionError, StudyFileError, Text

if TYPE_CHECKING:
    from expgrid.results_view import Results
    from expgrid.study_types import Study
    from expgrid.trainable_spec import TrainableSpec

# What cluster/local_ray.py sets before Ray is imported (a local Ray listens on 127.0.0.1 only;
# Ray reads it once, at its import), set as expgrid is imported: a notebook that imports ray
# itself after expgrid (for ray.get_runtime_context, say) still gets a loopback-only local Ray.
# setdefault: a user who set it keeps it, and the start refuses a Ray beyond loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

INLINE = "<inline>"  # what errors call a study given as a dict
# Beyond RunOptions' fields: what changes the study being loaded, as `expgrid run`'s options do.
STUDY_OPTIONS = ("set", "overrides", "smoke", "data_root")


def run(study: str | Path | Mapping[str, Any], **options: Any) -> Results:
    """Run a study and return its :class:`~expgrid.results_view.Results`.

    ``study``: a path, a name in search_spaces/ (``"digits_demo"``), or a dict (a study written
    in the cell; ``trainable`` may be a function). ``options``: the fields of
    :class:`expgrid.run_options.RunOptions` (``results_dir``, ``tracking_uri``, ``address``,
    ``sections``, ``max_concurrent``, ``resume``, ``num_cpus``, …), and ``set`` (``--set``'s
    pairs as a dict: ``set={"epochs": 2}``), ``smoke``, ``data_root``. Results go to
    ``results/<study name>`` under the current directory unless ``results_dir`` says otherwise;
    a rerun skips the sections that finished with the same trials."""
    from expgrid.interrupts import Interrupted
    from expgrid.run_options import RunOptions
    from expgrid.runner import run_study
    from expgrid.tracking.ui import ui_command, ui_url

    given = dict(options)
    run_fields = {f.name for f in dataclasses.fields(RunOptions)}
    for name in given:
        if name not in run_fields and name not in STUDY_OPTIONS:
            known = ", ".join(sorted(run_fields | set(STUDY_OPTIONS)))
            raise OptionError(
                f"expgrid.run({name}=…)", ConfigError("", f"an option of expgrid.run: one of {known}", name)
            )
    loaded, spec = _prepare(study, given)
    run_options = _run_options(loaded, {k: v for k, v in given.items() if k in run_fields})
    out = run_options.stream or sys.stdout
    try:
        outcome = run_study(loaded, spec, run_options)
    except Interrupted as e:
        if e.outcome is not None:
            e.hint = (f"the results so far: expgrid.open({str(e.outcome.results_dir)!r}); "
                      "expgrid.run(<the same study>, resume=True) continues")  # fmt: skip
        raise
    print(f"Results: {outcome.results_dir}   (expgrid.open({str(outcome.results_dir)!r}) reads them again)", file=out)
    print(f"MLflow UI: {ui_command(outcome.tracking_uri)}   then browse {ui_url(outcome.tracking_uri, outcome.experiment_id)}", file=out)
    return open(outcome.results_dir)


def open(results_dir: str | Path) -> Results:  # noqa: A001 - expgrid.open, as the issue names it
    """The :class:`~expgrid.results_view.Results` of a results directory, finished or partial
    (an interrupted run's finished sections); runs nothing."""
    from expgrid.results_view import Results

    return Results(results_dir)


def shutdown() -> bool:
    """End the Ray that expgrid started in this process (a connection it made to a cluster is
    closed; the cluster stays up); a Ray session the user began is left alone. True when
    something was ended, False when there was nothing. The next ``run`` starts a fresh Ray."""
    if "cluster.connect" not in sys.modules:
        return False  # no run of this process reached Ray
    from cluster import connect

    return connect.shutdown_own() is not None


# ---------------------------------------------------------------------------------------------


def _prepare(study: Any, options: dict[str, Any]) -> tuple[Study, TrainableSpec]:
    """The study loaded and fully checked (nothing started or created), as `expgrid run` does."""
    from expgrid.runner import prepare, prepare_loaded
    from expgrid.study import load_inline
    from expgrid.study_paths import resolve_study_path

    overrides = _overrides(options)
    smoke = bool(options.get("smoke", False))
    if isinstance(study, Mapping):
        raw = dict(study)
        spec = None
        if callable(raw.get("trainable")):
            from expgrid.trainable_lookup import function_trainable

            try:
                spec = function_trainable(raw["trainable"])
            except ConfigError as e:
                raise StudyFileError(INLINE, e) from None
            raw["trainable"] = spec.ref  # the study's name for it (MLflow's param, study.json)
        return prepare_loaded(load_inline(raw, INLINE, overrides), spec, smoke=smoke)
    if isinstance(study, (str, Path)):
        return prepare(resolve_study_path(str(study)), overrides, smoke=smoke)
    raise OptionError(
        "expgrid.run(study)",
        ConfigError(
            "", "a study file's path, the name of one in search_spaces/, or a dict", Text(type(study).__name__)
        ),
    )


def _overrides(options: dict[str, Any]) -> Any:
    from expgrid.study import Overrides

    given = [k for k in ("set", "overrides") if options.get(k) is not None]
    if len(given) > 1:
        raise OptionError("expgrid.run(set=…)", ConfigError("", "set= or overrides= (the same thing), not both",
                                                            Text("both")))  # fmt: skip
    values = options.get(given[0]) if given else {}
    if not isinstance(values, Mapping):
        raise OptionError("expgrid.run(set=…)", ConfigError("", "a dict of dotted key → value, e.g. {'epochs': 2}",
                                                            Text(type(values).__name__)))  # fmt: skip
    overrides = Overrides({str(k): v for k, v in values.items()}, {str(k): "set=" for k in values})
    if options.get("data_root") is not None:
        overrides["dataset.root"] = str(Path(options["data_root"]).resolve())
        overrides.options["dataset.root"] = "data_root="
    return overrides


def _run_options(study: Study, given: dict[str, Any]) -> Any:
    """RunOptions from the keyword options, each checked as `expgrid run` checks its option."""
    from expgrid.cli import directory_option, tracking_uri_problem
    from expgrid.run_options import RunOptions

    given = dict(given)
    results = given.get("results_dir")
    results = Path(results) if results is not None else Path("results") / (
        f"{study.name}-smoke" if study.smoke else study.name)  # fmt: skip
    directory_option("results_dir=", results)
    given["results_dir"] = results.resolve()
    storage = given.get("storage")
    if storage is not None and "://" not in str(storage):
        directory_option("storage=", Path(storage))
        given["storage"] = str(Path(storage).resolve())
    uri, env_uri = given.get("tracking_uri"), os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None or env_uri:  # the default store when tracking_uri is not given: the same rule
        problem = tracking_uri_problem(str(uri if uri is not None else env_uri))
        if problem is not None:
            raise OptionError("tracking_uri=" if uri is not None else "MLFLOW_TRACKING_URI", ConfigError("", *problem))
    sections = given.get("sections")
    if sections is not None:
        ids = [s.strip() for s in sections.split(",")] if isinstance(sections, str) else [str(s) for s in sections]
        known = [s.id for s in study.sections]
        for sid in ids:
            if sid not in known:
                raise OptionError("sections=", ConfigError("", f"section ids of {study.path}: {', '.join(known)}", sid))
        given["sections"] = tuple(ids)
    return RunOptions(**given)
