"""``expgrid`` command line: run, validate, show, list, report.

Exit codes: 0 done; 1 the study ran but could not finish; 2 bad study file, option or results
directory (nothing was started).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from expgrid.config import flatten
from expgrid.errors import EXIT_FAILED, EXIT_INVALID, ConfigError, ResultsError, StudyFailed, StudyFileError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (StudyFileError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except StudyFailed as e:
        print(f"study stopped: {e}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expgrid", description="Run sectioned experiment grids on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a study (sections in order; finished sections are skipped)")
    run.add_argument("study", help="a study file, or the name of one in search_spaces/ (e.g. digits_demo)")
    run.add_argument("--results", type=Path, help="results directory (default: results/<study name>)")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under --results)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--address", help="attach to a running Ray cluster (e.g. auto, 10.0.0.1:6379, ray://host:10001)")
    where.add_argument("--local", action="store_true", help="start a private local Ray (the default)")
    run.add_argument("--sections", help="comma-separated section ids to run, e.g. 3.1,3.2")
    run.add_argument("--max-concurrent", type=_positive_int, help="at most this many trials at once")
    run.add_argument("--num-cpus", type=_positive_int, help="CPUs a local Ray may use (default: all)")
    run.add_argument("--storage", help="where trial checkpoints live: a directory every node reaches, or a URI such as "
                     "s3://bucket/path (default: <results>/tune, enough on one machine)")  # fmt: skip
    run.add_argument("--resume", action="store_true",
                     help="continue a section interrupted by a crash or kill of this command (its finished trials "
                          "are kept, running ones go on from their checkpoints); without it such a section reruns")  # fmt: skip
    _study_options(run)
    run.set_defaults(handler=_run)

    validate = sub.add_parser("validate", help="check a study file without running anything")
    validate.add_argument("study")
    _study_options(validate)
    validate.set_defaults(handler=_validate)

    show = sub.add_parser("show", help="list a study's sections, trial counts and inheritance")
    show.add_argument("study")
    _study_options(show)
    show.set_defaults(handler=_show)

    report = sub.add_parser("report", help="rebuild the tables, plots and summary of a finished run (runs nothing)")
    report.add_argument("results", type=Path, help="the results directory of `expgrid run` (e.g. results/digits-demo)")
    report.add_argument("--format", choices=("text", "markdown"), default="text",
                        help="how to print the summary (default: text, as `expgrid run` prints it)")  # fmt: skip
    report.set_defaults(handler=_report)

    sync = sub.add_parser("sync", help="upload to MLflow the runs a results directory holds and the store lacks "
                          "(e.g. after the tracking server was down during a run)")  # fmt: skip
    sync.add_argument("results", type=Path, help="the results directory of `expgrid run`")
    sync.add_argument("--tracking-uri", help="the MLflow store to fill (default: the one the run used)")
    sync.set_defaults(handler=_sync)

    lister = sub.add_parser("list", help="list registered trainables (and their models, datasets, optimizers)")
    lister.set_defaults(handler=_list)
    return parser


def _study_options(command: argparse.ArgumentParser) -> None:
    """What changes the study being loaded: the same for run, validate and show."""
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a default, e.g. --set optimizer.lr=0.01 (value read as YAML); repeatable")
    command.add_argument("--data-root", help="the dataset folder (sets dataset.root)")
    command.add_argument("--smoke", action="store_true",
                         help="a quick check of the whole study: each section's first two trials, tiny, one epoch")  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text}")
    return value


def resolve_study_path(name: str) -> str:
    """A path as given, or the name of a study shipped in search_spaces/ (with or without .yaml)."""
    path = Path(name)
    if path.exists() or path.suffix in (".yaml", ".yml") and path.parent != Path("."):
        return str(path)
    import search_spaces

    shipped = Path(search_spaces.__file__).parent / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return str(shipped) if shipped.exists() else str(path)


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StudyFileError("--set", ConfigError("--set", "KEY=VALUE, e.g. optimizer.lr=0.01", pair))
        out[key.strip()] = yaml.safe_load(value)
    return out


def _load(args: argparse.Namespace, check_data: bool = True):
    from expgrid.runner import prepare

    overrides = _overrides(args.overrides)
    if args.data_root:
        overrides["dataset.root"] = str(Path(args.data_root).resolve())
    return prepare(resolve_study_path(args.study), overrides, smoke=args.smoke, check_data=check_data)


def _run(args: argparse.Namespace) -> int:
    from expgrid.runner import RunOptions, print_summary, run_study

    study, spec = _load(args)  # every check before Ray starts
    options = RunOptions(
        # A smoke run keeps its results apart, so it never passes for (or skips) the real run.
        results_dir=args.results or (Path("results") / f"{study.name}-smoke" if study.smoke else None),
        tracking_uri=args.tracking_uri,
        address=args.address,
        sections=tuple(s.strip() for s in args.sections.split(",")) if args.sections else None,
        max_concurrent=args.max_concurrent,
        resume=args.resume,
        storage=args.storage if args.storage is None or "://" in args.storage else str(Path(args.storage).resolve()),
        num_cpus=args.num_cpus,
    )
    outcome = run_study(study, spec, options)
    print_summary(study, outcome)
    print(f"\nResults: {outcome.results_dir}")
    if outcome.summary is not None:
        print(f"Report:  {outcome.results_dir / 'report' / 'report.md'} (tables, plots; `expgrid report` rebuilds it)")
    print(f"Open the MLflow UI:  {ui_command(outcome.tracking_uri)}   then browse http://127.0.0.1:5000")
    return 0


def ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"(tracking server) {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000"


def _validate(args: argparse.Namespace) -> int:
    study, spec = _load(args)
    trials = sum(s.num_trials for s in study.sections)
    print(f"{study.path}: OK — study {study.name!r}, trainable {spec.name}, {len(study.sections)} sections, {trials} trials")
    return 0


def _show(args: argparse.Namespace) -> int:
    from expgrid.planning import inherited_from

    study, spec = _load(args, check_data=False)  # show only plans: it works without the data
    print(f"Study {study.name} ({study.path})")
    if study.description:
        print(f"  {study.description.strip()}")
    print(f"  trainable {spec.name} · metric {study.metric} ({study.mode}) · seed {study.seed}")
    for s in study.sections:
        inherits = inherited_from(study, s)
        src = "defaults" + (" + best of " + ", ".join(inherits) if inherits else "")
        swept = ", ".join(f"{k} ×{len(v)}" for k, v in s.grid + s.zip) + "".join(
            f", {k} ~{d.kind}" for k, d in s.sample
        )
        print(f"  {s.id:>6}  {s.name:<28} {s.num_trials:>4} trials  sweeps {swept.lstrip(', ')}  from {src}"
              f"  [{study.scheduler_of(s).kind}, {s.select}]")  # fmt: skip
    print(f"  total: {sum(s.num_trials for s in study.sections)} trials")
    if study.smoke:
        from expgrid.planning import SMOKE_TRIALS

        smoke = ", ".join(f"{k}={v}" for k, v in flatten(dict(spec.smoke or {})).items())
        print(f"  smoke run: the first {SMOKE_TRIALS} trials of each section, with {smoke}"
              " except where a section sweeps it")  # fmt: skip
    return 0


def _report(args: argparse.Namespace) -> int:
    from expgrid import reports

    report = reports.rebuild(args.results)
    print(report.summary.to_markdown() if args.format == "markdown" else report.summary.to_text(), end="")
    # Where the files went: on stderr, so that stdout is the summary alone (e.g. `> summary.md`).
    print(f"{len(report.files)} report files in {reports.study_report_dir(args.results)} and "
          f"{args.results / 'sections'}/*/report", file=sys.stderr)  # fmt: skip
    return 0


def _sync(args: argparse.Namespace) -> int:
    from expgrid.mlflow_sync import sync

    created = sync(args.results.resolve(), args.tracking_uri)
    print(f"created {created['study']} study, {created['section']} section and {created['trial']} trial runs")
    return 0


def _list(args: argparse.Namespace) -> int:
    from trainables.registry import TRAINABLES, list_trainables

    for name in list_trainables():
        spec = TRAINABLES.get(name)
        metrics = ", ".join(spec.metrics or ()) or "?"
        print(f"{name:<12} {spec.ref}  metrics: {metrics}")
    try:
        from trainables.classification import data, models, optim

        print(f"\nclassify datasets:   {', '.join(data.DATASETS.names())}")
        print(f"classify models:     {', '.join(models.MODELS.names())}")
        print(f"classify optimizers: {', '.join(optim.OPTIMIZERS.names())}")
    except ImportError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
