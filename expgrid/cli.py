"""``expgrid`` command line: run, validate, show, list, report.

Exit codes: 0 done; 1 the study ran but could not finish; 2 bad study file, option or results
directory (nothing was started). A bad option, argparse's own complaints included, is one line
``error: --option: expected …, got …``; every option is checked before anything is created.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import math
import os
import re
import sys
import traceback
import urllib.parse
from pathlib import Path
from typing import Any

from expgrid import interrupts, yamlfile
from expgrid.config import flatten
from expgrid.errors import (
    EXIT_FAILED,
    EXIT_INVALID,
    ClusterUnreachable,
    ConfigError,
    OptionError,
    ResultsError,
    StudyFailed,
    StudyFileError,
    Text,
)
from expgrid.interrupts import Interrupted
from expgrid.locking import ResultsBusy
from expgrid.study_paths import resolve_study_path  # noqa: F401 - also imported from here (README)
from expgrid.tracking.ui import ui_command, ui_url


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (StudyFileError, ResultsError, ResultsBusy) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INVALID
    except ClusterUnreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except StudyFailed as e:
        print(f"study stopped: {e}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as e:
        if e.outcome is not None:
            _print_end(e.outcome)
        print(f"interrupted: {e}; run the same command with --resume to continue", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # a full disk, a permission: the path and the reason, not a traceback
        if os.environ.get("EXPGRID_TRACEBACK"):
            traceback.print_exc()
        where = f"{e.filename}: " if e.filename else ""
        full = e.errno in (errno.ENOSPC, errno.EDQUOT)
        hint = "; free some space, then run the same command with --resume" if full and args.handler is _run else ""
        print(f"error: {where}{e.strerror or e}{hint}", file=sys.stderr)
        return EXIT_FAILED


COMMANDS = ("run", "validate", "show", "list", "report", "sync")


class _Parser(argparse.ArgumentParser):
    """argparse with its complaints as expgrid's one line: ``error: --option: expected …, got …``
    (no usage block; ``expgrid COMMAND --help`` has it). Subcommands' parsers are of this class too."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._argv = list(sys.argv[1:] if args is None else args)  # unrecognized options are named from it
        return super().parse_args(args, namespace)

    def error(self, message: str) -> Any:
        print(f"error: {_option_message(message, self._command())}", file=sys.stderr)
        sys.exit(EXIT_INVALID)

    def _command(self) -> str:
        given = next((a for a in getattr(self, "_argv", []) if a in COMMANDS), None)
        return f"{self.prog} {given}" if given and self.prog == "expgrid" else self.prog


def _option_message(message: str, command: str) -> str:
    """argparse's message, as Python 3.11's argparse words it (later ones drop the quotes around
    choices; both read), as ``OPTION: expected …, got …``; any other wording passes through as
    ``OPTION: message``, still one line."""
    message = " ".join(message.split())
    help_hint = f"see `{command} --help`"
    if match := re.fullmatch(r"unrecognized arguments: (.*)", message):
        first = match.group(1).split(" ")[0]
        if first.startswith("-"):
            return f"{first}: expected an option of {command} ({help_hint}), got {first!r}"
        return f"{first}: expected no further argument ({help_hint}), got {match.group(1)!r}"
    if match := re.fullmatch(r"the following arguments are required: (.*)", message):
        first = match.group(1).split(", ")[0]
        if first == "COMMAND":
            return f"COMMAND: expected one of {', '.join(COMMANDS)}, got none"
        return f"{first}: expected a value ({help_hint}), got none"
    if match := re.fullmatch(r"ambiguous option: (\S+) could match (.*)", message):
        return f"{match.group(1)}: expected one option, got an abbreviation of {match.group(2)}"
    match = re.fullmatch(r"argument (\S+): (.*)", message)
    if match is None:
        return message
    option, rest = match.group(1).split("/")[-1], match.group(2)
    if match := re.fullmatch(r"invalid choice: (.*?) \(choose from (.*)\)", rest):
        choices = match.group(2).replace("'", "")
        return f"{option}: expected one of {choices}, got {match.group(1)}"
    if match := re.fullmatch(r"invalid \S+ value: (.*)", rest):
        return f"{option}: expected a valid value, got {match.group(1)}"
    if re.fullmatch(r"expected (one|at most one|at least one) arguments?", rest):
        return f"{option}: expected a value after it, got none"
    if match := re.fullmatch(r"not allowed with argument (\S+)", rest):
        return f"{option}: expected either {match.group(1).split('/')[-1]} or {option}, got both"
    if match := re.fullmatch(r"ignored explicit argument (.*)", rest):
        return f"{option}: expected no value (it is a switch), got {match.group(1)}"
    return f"{option}: {rest}"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="expgrid", description="Run sectioned experiment grids on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a study (sections in order; finished sections are skipped)")
    run.add_argument("study", help="a study file, or the name of one in search_spaces/ (e.g. digits_demo)")
    run.add_argument("--tracking-uri", type=tracking_uri,
                     help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else SQLite under --results)")  # fmt: skip
    where = run.add_mutually_exclusive_group()
    where.add_argument("--address", help="attach to a running Ray cluster (e.g. auto, 10.0.0.1:6379, ray://host:10001)")
    where.add_argument("--local", action="store_true", help="start a private local Ray (the default)")
    run.add_argument("--connect-timeout", type=_positive_seconds, default=30.0, metavar="SECONDS",
                     help="with --address: fail when no Ray cluster answers there within this long (default: 30)")  # fmt: skip
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
    sync.add_argument("--tracking-uri", type=tracking_uri, help="the MLflow store to fill (default: the one the run used)")
    sync.set_defaults(handler=_sync)

    lister = sub.add_parser("list", help="list registered trainables (and their models, datasets, optimizers)")
    lister.set_defaults(handler=_list)
    return parser


def _study_options(command: argparse.ArgumentParser) -> None:
    """What changes the study being loaded (and where its results go): the same for run,
    validate and show."""
    command.add_argument("--results", type=Path, help="results directory (default: results/<study name>)")
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a default, e.g. --set optimizer.lr=0.01 (value read as YAML); repeatable")
    command.add_argument("--data-root", help="the dataset folder (sets dataset.root)")
    command.add_argument("--smoke", action="store_true",
                         help="a quick check of the whole study: each section's first two trials, tiny, one epoch")  # fmt: skip


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text}")
    return value


# Tracking-store schemes of MLflow 3.x (mlflow/tracking/_tracking_service/utils.py,
# _register_tracking_stores: "" and file, databricks, databricks-uc, uc, http(s), and the
# SQLAlchemy engines of mlflow/store/db/db_types.py when sqlalchemy is installed); plugins add
# theirs as entry points of the group "mlflow.tracking_store". Checked here so that a URI MLflow
# has no store for is refused before anything starts, without importing MLflow (seconds).
TRACKING_SCHEMES = ("", "file", "databricks", "databricks-uc", "uc", "http", "https")
DATABASE_ENGINES = ("postgresql", "mysql", "sqlite", "mssql")
TRACKING_EXAMPLES = "e.g. http://127.0.0.1:5000, sqlite:///mlflow.db or a directory"


def tracking_uri(text: str) -> str:
    """``--tracking-uri`` (argparse type): a URI MLflow has a tracking store for."""
    problem = tracking_uri_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"expected {problem[0]}, got {problem[1]!r}")
    return text


def tracking_uri_problem(text: str) -> tuple[str, str] | None:
    """None when ``text``'s scheme, read as MLflow's get_uri_scheme reads it, names a tracking
    store MLflow has; else (what was expected, the URI)."""
    if not text.strip():
        return f"a tracking URI ({TRACKING_EXAMPLES})", text
    if text in ("databricks", "databricks-uc", "uc"):  # MLflow takes these bare words as URIs
        return None
    try:
        parsed = urllib.parse.urlparse(text)
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        return f"a tracking URI ({TRACKING_EXAMPLES})", text
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: MLflow reads a path
        scheme = ""
    if any(scheme.startswith(e) for e in DATABASE_ENGINES):  # postgresql+psycopg2: the engine's
        engine_ok = scheme.count("+") <= 1 and scheme.split("+")[0] in DATABASE_ENGINES
        if not engine_ok or not importlib.util.find_spec("sqlalchemy"):
            return "a database URI such as sqlite:///mlflow.db or postgresql://HOST/DB", text
        return None
    if scheme in ("http", "https") and not parsed.netloc:
        return f"{scheme}://HOST[:PORT]", text
    if scheme in TRACKING_SCHEMES or scheme in _plugin_tracking_schemes():
        return None
    known = sorted({s for s in TRACKING_SCHEMES if s} | set(DATABASE_ENGINES) | _plugin_tracking_schemes())
    return f"a URI of a scheme MLflow has a tracking store for ({', '.join(known)}; {TRACKING_EXAMPLES})", text


def _plugin_tracking_schemes() -> set[str]:
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.tracking_store")}


def directory_option(option: str, path: Path) -> None:
    """``--results`` / ``--storage``: a directory, or a path where one can be made: neither a
    file nor anything under a file. Raises OptionError; creates nothing."""
    absolute = Path(os.path.abspath(path))
    for candidate in (absolute, *absolute.parents):
        try:
            there = os.path.lexists(candidate)
            is_dir = candidate.is_dir()
        except OSError as e:  # e.g. a name too long for the filesystem
            raise OptionError(option, ConfigError("", "a directory path", Text(f"{str(path)!r} ({e.strerror})"))) from None
        if not there:
            continue
        if is_dir:
            return
        what = "a file" if candidate == absolute else f"under the file {candidate}"
        raise OptionError(option, ConfigError("", "a directory (or a path to create one at)", Text(f"{str(path)!r} ({what})")))


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < math.inf):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def _overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError("--set", ConfigError("", "KEY=VALUE, e.g. optimizer.lr=0.01", pair))
        try:
            out[key] = yamlfile.load(value)
        except ConfigError as e:
            why = "" if e.expected == "valid YAML" else f" ({e.expected})"
            raise OptionError("--set", ConfigError(
                key, "a plain YAML value: a number, text (quoted where YAML would read it otherwise), a list or "
                f"a mapping, without tags{why}", value)) from None  # fmt: skip
    return out


def _load(args: argparse.Namespace, check_data: bool = True):
    from expgrid.runner import prepare
    from expgrid.study import Overrides

    overrides = Overrides(_overrides(args.overrides))
    if args.data_root:
        overrides["dataset.root"] = str(Path(args.data_root).resolve())
        overrides.options["dataset.root"] = "--data-root"
    return prepare(resolve_study_path(args.study), overrides, smoke=args.smoke, check_data=check_data)


def results_dir_of(args: argparse.Namespace, study: Any) -> Path:
    """Where ``expgrid run`` writes, checked (a directory, or a path to make one at): ``--results``,
    else results/<study name> under the current directory. A smoke run keeps its results apart,
    so it never passes for (or skips) the real run."""
    given = args.results if args.results is not None else Path("results") / (
        f"{study.name}-smoke" if study.smoke else study.name)  # fmt: skip
    directory_option("--results", given)
    return given.resolve()


def _check_run_options(args: argparse.Namespace) -> None:
    """What argparse cannot see alone; nothing is created until all of it holds."""
    if args.storage is not None and "://" not in args.storage:
        directory_option("--storage", Path(args.storage))
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    problem = tracking_uri_problem(env_uri) if args.tracking_uri is None and env_uri else None
    if problem is not None:  # the default store when --tracking-uri is not given: the same rule
        raise OptionError("MLFLOW_TRACKING_URI", ConfigError("", *problem))


def _check_sections(args: argparse.Namespace, study: Any) -> None:
    if args.sections is None:
        return
    known = [s.id for s in study.sections]
    for sid in (s.strip() for s in args.sections.split(",")):
        if sid not in known:
            raise OptionError("--sections", ConfigError("", f"section ids of {study.path}: {', '.join(known)}", sid))


def _run(args: argparse.Namespace) -> int:
    from expgrid.run_options import RunOptions
    from expgrid.runner import run_study

    _check_run_options(args)
    study, spec = _load(args)  # every check before Ray starts
    _check_sections(args, study)
    results_dir = results_dir_of(args, study)
    options = RunOptions(
        results_dir=results_dir,
        tracking_uri=args.tracking_uri,
        address=args.address,
        connect_timeout=args.connect_timeout,
        sections=tuple(s.strip() for s in args.sections.split(",")) if args.sections else None,
        max_concurrent=args.max_concurrent,
        resume=args.resume,
        storage=args.storage if args.storage is None or "://" in args.storage else str(Path(args.storage).resolve()),
        num_cpus=args.num_cpus,
    )
    try:
        outcome = run_study(study, spec, options)
    finally:
        interrupts.leave_quietly_on_signals()
    _print_end(outcome)
    return 0


def _print_end(outcome) -> None:
    """The summary and where everything is, as a run ends (also a stopped one)."""
    from expgrid.wording import print_summary

    print_summary(outcome.study, outcome)
    print(f"\nResults: {outcome.results_dir}")
    if outcome.summary is not None:
        print(f"Report:  {outcome.results_dir / 'report' / 'report.md'} (tables, plots; `expgrid report` rebuilds it)")
    print(f"Open the MLflow UI:  {ui_command(outcome.tracking_uri)}   then browse {ui_url(outcome.tracking_uri, outcome.experiment_id)}")


def _validate(args: argparse.Namespace) -> int:
    study, spec = _load(args)
    results_dir = results_dir_of(args, study)
    trials = sum(s.num_trials for s in study.sections)
    print(f"{study.path}: OK — study {study.name!r}, trainable {spec.name}, {len(study.sections)} sections, {trials} trials")
    print(f"Results would go to {results_dir}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from expgrid.planning import inherited_from

    study, spec = _load(args, check_data=False)  # show only plans: it works without the data
    results_dir = results_dir_of(args, study)
    print(f"Study {study.name} ({study.path})")
    print(f"  results in {results_dir}")
    if study.description:
        print(f"  {study.description.strip()}")
    print(f"  trainable {spec.name} · metric {study.metric} ({study.mode}) · seed {study.seed}")
    for s in study.sections:
        inherits = inherited_from(study, s)
        single = [sid for sid in inherits if not (s.top and sid == inherits[-1])]
        src = "defaults" + (" + best of " + ", ".join(single) if single else "")
        if s.top and inherits:  # `inherit: {from: …, top: k}`
            src += f" × {s.top} best of {inherits[-1]}"
        swept = ", ".join(f"{k} ×{len(v)}" for k, v in s.grid + s.zip) + "".join(
            f", {k} ~{d.kind}" for k, d in s.sample
        ) or "nothing (one trial)"
        print(f"  {s.id:>6}  {s.name:<28} {s.num_trials:>4} trial{'s' if s.num_trials != 1 else ' '}  sweeps {swept.lstrip(', ')}  from {src}"
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
    from expgrid.tracking.sync import SyncFailed, sync

    results = args.results.resolve()
    try:
        uri, done = sync(results, args.tracking_uri)
    except SyncFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    if done.nothing:
        print(f"sync {results} → {uri}: nothing to do (the store holds everything the results hold)")
    else:
        print(f"sync {results} → {uri}: {done.text()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    """Each trainable with its metrics, then the names its catalogue holds (datasets, models, …).
    One that cannot be loaded is named on stderr and the others are still listed (exit 1)."""
    from expgrid.trainable_lookup import list_trainables, resolve_trainable

    broken = 0
    for name in list_trainables():
        try:
            spec = resolve_trainable(name)
            catalogue = spec.catalogue_names()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not hide the others
            print(f"error: trainable {name}: {e}", file=sys.stderr)
            broken += 1
            continue
        print(f"{name:<12} {spec.ref}  metrics: {', '.join(spec.metrics or ()) or '?'}")
        for kind, names in catalogue.items():
            print(f"  {kind + ':':<15} {', '.join(names)}")
    return EXIT_FAILED if broken else 0

def entry() -> None:
    """The ``expgrid`` command (console script, ``python -m expgrid``): :func:`main`, then out at
    once. Once main has returned, everything of the run is on disk and in MLflow (the runner
    waits for MLflow's writer and writes study.json last), so nothing is left for the
    interpreter's exit to do but shut Ray down (1-2 s) and tear down Ray's, Tune's and torch's
    modules (several seconds more on a busy machine). The output is flushed, a local Ray's
    shutdown is handed to a process of its own (``cluster.connect.leave_without_waiting``) and
    the process ends with main's exit code. An exception main lets through (a bug) is printed
    and ends the process the usual way."""
    code = main()
    leave(code)


def leave(code: int) -> None:
    import logging

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()  # flushes and closes every log handler (ray.log included)
    connect = sys.modules.get("cluster.connect")  # loaded only where Ray was
    if connect is not None:
        connect.leave_without_waiting()
    os._exit(code)


if __name__ == "__main__":
    entry()
