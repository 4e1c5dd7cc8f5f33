"""Bad input, one line always: every malformed study file or option → exit 2 and exactly one line
``error: FILE: FIELD: expected …, got …`` (or ``error: --option: …``), no traceback, nothing
created anywhere, Ray not started.

Each row runs ``expgrid.cli.main`` in this process, in an empty working directory, with
``--results`` under tmp_path and MLFLOW_TRACKING_URI unset. The runner's ``run_study`` is
replaced by a tripwire for these rows: every one of them must be refused before the runner is
reached, and a row that was not would otherwise start Ray and run the study. A few rows run the
real ``python -m expgrid`` in a fresh process, where a traceback or an import of Ray would show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from expgrid.cli import main

GOOD = """\
study: s
trainable: toy
metric: score
defaults: {epochs: 2}
resources: {cpu: 1}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 1]}
  - id: "2"
    zip: {x: [1, 2], y: [0, 1]}
    sample: {sleep: {uniform: [0, 0.01]}}
"""

CLASSIFY = """\
study: c
trainable: classify
metric: val_accuracy
defaults: {dataset: digits, model: {name: mlp}, optimizer: {name: adam}, epochs: 1}
sections:
  - {id: "1", grid: {optimizer.lr: [0.1, 0.01]}}
"""

# A user's trainable that declares nothing: no parameters, metrics or checks of its own.
FREE = GOOD.replace("trainable: toy", "trainable: free_trainable:train").replace("metric: score", "metric: acc")
FREE_MODULE = "def train(config):\n    pass\n"

TEN_TO_THE_TEN = "grid: {" + ", ".join(f"p{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]" for i in range(10)) + "}"
DEEP_LIST = "description: " + "[" * 500 + "]" * 500 + "\n"
DEEP_MAP = "description: " + "{a: " * 100 + "1" + "}" * 100 + "\n"
LAUGHS = "".join(
    f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "1"] * 10) + "]\n" for i in range(7)
)  # 10⁷ values once the aliases are followed
NAME_RULE = "expected a name of ASCII letters, digits, '.', '_' and '-', not starting with '.'"


def edit(old: str, new: str, base: str = GOOD) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


def section(text: str, base: str = GOOD) -> str:
    """``base`` with ``text`` added to its first section."""
    return edit('    name: X\n', f"    name: X\n    {text}\n", base)


# (id, argv, files, the line's start after "error: ", a fragment it must also hold)
# argv and the expectations may name {study} (the study file), {res} (the --results directory)
# and {tmp}; files maps names under tmp_path/in to their text (bytes: written as they are).
V = ["validate", "{study}", "--results", "{res}"]
R = ["run", "{study}", "--results", "{res}"]
S = ["show", "{study}", "--results", "{res}"]
ROWS = [
    # --- the file itself: encoding, YAML, nesting, duplicate keys -------------------------------
    ("non-utf8", R, {"study.yaml": GOOD.encode().replace(b"name: X", b"name: X\xff")}, "{study}: line 8: expected UTF-8 text", "got b'\\xff'"),
    ("latin-1 name", V, {"study.yaml": GOOD.replace("name: X", "name: Étude").encode("latin-1")}, "{study}: line 8: expected UTF-8 text", ""),
    ("deep list", R, {"study.yaml": GOOD + DEEP_LIST}, "{study}: line 13: expected at most 32 levels of nesting", ""),
    ("deep mapping", S, {"study.yaml": GOOD + DEEP_MAP}, "{study}: line 13: expected at most 32 levels of nesting", ""),
    ("alias to itself", V, {"study.yaml": GOOD + "description: &a [*a]\n"}, "{study}: description[0]: expected a value that does not contain itself", ""),
    ("billion laughs", V, {"study.yaml": GOOD.replace("defaults: {epochs: 2}", "defaults:\n  epochs: 2\n" + "".join("  " + line + "\n" for line in LAUGHS.splitlines()))}, "{study}: defaults.l5", "expected at most 1000000 values"),
    ("control character", V, {"study.yaml": GOOD.replace("name: X", "name: X\x07")}, "{study}: line 8: expected printable text", "U+0007"),
    ("yaml syntax", R, {"study.yaml": GOOD.replace("metric: score", "metric: [score")}, "{study}: line ", "expected valid YAML"),
    ("python tag", V, {"study.yaml": GOOD.replace("study: s", "study: !!python/object/apply:os.system [ls]")}, "{study}: line 1: expected valid YAML", "python/object/apply:os.system"),
    ("two documents", V, {"study.yaml": GOOD + "---\nstudy: t\n"}, "{study}: line ", "expected valid YAML"),
    ("empty file", R, {"study.yaml": ""}, "{study}: expected a mapping at the top of the file", "got an empty file"),
    ("only comments", V, {"study.yaml": "# nothing here\n"}, "{study}: expected a mapping at the top of the file", "got an empty file"),
    ("list at top", V, {"study.yaml": "- study: s\n- trainable: toy\n"}, "{study}: expected a mapping at the top of the file", "got [{{'study': 's'}}"),
    ("scalar at top", S, {"study.yaml": "just some words\n"}, "{study}: expected a mapping at the top of the file", "got 'just some words'"),
    ("missing file", V, {}, "{study}: expected a readable YAML file", "No such file or directory"),
    ("directory as study", ["validate", "{tmp}/in", "--results", "{res}"], {"x.yaml": GOOD}, "{tmp}/in: expected a readable YAML file", "directory"),
    ("duplicate top key", R, {"study.yaml": edit("metric: score", "metric: score\nmetric: loss")}, "{study}: line 4: expected each key once in a mapping", "got 'metric' again (first on line 3)"),
    ("duplicate grid key", V, {"study.yaml": edit("grid: {x: [0, 1]}", "grid: {x: [0, 1], x: [2]}")}, "{study}: line 9: expected each key once in a mapping", "got 'x' again"),
    ("duplicate section key", S, {"study.yaml": edit('    name: X\n', '    name: X\n    name: Y\n')}, "{study}: line 9: expected each key once in a mapping", "got 'name' again (first on line 8)"),
    # --- trainable references ----------------------------------------------------------------------
    ("ref :fn", R, {"study.yaml": edit("trainable: toy", 'trainable: ":fn"')}, "{study}: trainable: expected a registered name or package.module:function", "got ':fn'"),
    ("ref a:b:c", V, {"study.yaml": edit("trainable: toy", 'trainable: "a:b:c"')}, "{study}: trainable: expected a registered name or package.module:function", ""),
    ("ref relative", V, {"study.yaml": edit("trainable: toy", 'trainable: "..pkg:fn"')}, "{study}: trainable: expected a registered name or package.module:function", ""),
    ("ref without function", V, {"study.yaml": edit("trainable: toy", 'trainable: "os:"')}, "{study}: trainable: expected a registered name or package.module:function", ""),
    ("ref not a function", V, {"study.yaml": edit("trainable: toy", 'trainable: "os:sep"')}, "{study}: trainable: expected a function named 'sep' in module os", ""),
    ("ref module raises", V, {"study.yaml": edit("trainable: toy", "trainable: raising_module:train"), "raising_module.py": "raise ValueError('half-written')\n"}, "{study}: trainable: expected a module that imports without errors", "ValueError: half-written"),
    ("ref missing module", V, {"study.yaml": edit("trainable: toy", "trainable: no_such_module_x:train")}, "{study}: trainable: expected an importable module", ""),
    ("unknown trainable", S, {"study.yaml": edit("trainable: toy", "trainable: tyo")}, "{study}: trainable: expected a registered trainable", "did you mean toy"),
    ("trainable a number", V, {"study.yaml": edit("trainable: toy", "trainable: 5")}, "{study}: trainable: expected a non-empty string", "got 5"),
    # --- NaN, inf and huge numbers -----------------------------------------------------------------
    ("cpu inf", R, {"study.yaml": edit("cpu: 1", "cpu: .inf")}, "{study}: resources.cpu: expected a finite number", "got inf"),
    ("gpu inf", R, {"study.yaml": edit("cpu: 1", "cpu: 1, gpu: .inf")}, "{study}: resources.gpu: expected a finite number", "got inf"),
    ("cpu nan", V, {"study.yaml": edit("cpu: 1", "cpu: .nan")}, "{study}: resources.cpu: expected a finite number", "got nan"),
    ("section gpu nan", V, {"study.yaml": section("resources: {cpu: 1, gpu: .NaN}")}, "{study}: sections[0].resources.gpu: expected a finite number", "got nan"),
    ("reduction_factor nan", V, {"study.yaml": edit("resources: {cpu: 1}", "scheduler: {asha: {reduction_factor: .nan}}")}, "{study}: scheduler.asha.reduction_factor: expected a finite number", ""),
    ("min_delta nan", V, {"study.yaml": section("early_stopping: {monitor: loss, min_delta: .nan}")}, "{study}: sections[0].early_stopping.min_delta: expected a finite number", ""),
    ("grid value inf", V, {"study.yaml": edit("x: [0, 1]", "x: [0, .inf]")}, "{study}: sections[0].grid.x[1]: expected a finite number", "got inf"),
    ("default -inf", S, {"study.yaml": edit("epochs: 2", "epochs: 2, y: -.inf")}, "{study}: defaults.y: expected a finite number", "got -inf"),
    ("sample bound nan", V, {"study.yaml": edit("uniform: [0, 0.01]", "uniform: [0, .nan]")}, "{study}: sections[1].sample.sleep.uniform[1]: expected a finite number", ""),
    ("huge integer", V, {"study.yaml": edit("cpu: 1", "cpu: 1000000000000000000000000000000")}, "{study}: resources.cpu: expected an integer within 64 bits", ""),
    ("float overflow", V, {"study.yaml": edit("study: s", "study: s\nseed: 1.0e+400")}, "{study}: seed: expected a finite number", "got inf"),
    ("--set nan", V + ["--set", "x=.nan"], {"study.yaml": GOOD}, "--set: x: expected a finite number", "got nan"),
    ("--set inf in a list", V + ["--set", "y=[1, -.inf]"], {"study.yaml": GOOD}, "--set: y[1]: expected a finite number", ""),
    # --- sizes -----------------------------------------------------------------------------------
    ("10^10 trials", V, {"study.yaml": edit("grid: {x: [0, 1]}", TEN_TO_THE_TEN.replace("p0", "x").replace("p1", "y"))}, "{study}: sections[0]: expected at most 100000 trials, got 10000000000", ""),
    ("10^10 trials no checks", R, {"study.yaml": edit("grid: {x: [0, 1]}", TEN_TO_THE_TEN, FREE), "free_trainable.py": FREE_MODULE}, "{study}: sections[0]: expected at most 100000 trials, got 10000000000", ""),
    ("10^6 draws", S, {"study.yaml": edit("sample: {sleep: {uniform: [0, 0.01]}}", "sample: {sleep: {uniform: [0, 0.01]}}\n    num_samples: 1000000")}, "{study}: sections[1]: expected at most 100000 trials, got 2000000", ""),
    # --- samplers --------------------------------------------------------------------------------
    ("randint floats", V, {"study.yaml": edit("uniform: [0, 0.01]", "randint: [0.5, 3.5]")}, "{study}: sections[1].sample.sleep.randint: expected [low, high] integers", ""),
    ("unknown sampler", V, {"study.yaml": edit("uniform: [0, 0.01]", "normal: [0, 1]")}, "{study}: sections[1].sample.sleep.normal: expected one of {{loguniform | uniform | randint | choice: ...}}", ""),
    ("uniform reversed", V, {"study.yaml": edit("uniform: [0, 0.01]", "uniform: [1, 0]")}, "{study}: sections[1].sample.sleep.uniform: expected [low, high] with low < high", ""),
    ("loguniform from 0", S, {"study.yaml": edit("uniform: [0, 0.01]", "loguniform: [0, 1]")}, "{study}: sections[1].sample.sleep.loguniform: expected a positive low bound", ""),
    ("choice empty", V, {"study.yaml": edit("uniform: [0, 0.01]", "choice: []")}, "{study}: sections[1].sample.sleep.choice: expected a non-empty list", ""),
    ("two samplers", V, {"study.yaml": edit("uniform: [0, 0.01]", "uniform: [0, 1], choice: [1]")}, "{study}: sections[1].sample.sleep: expected one of", "got {{'uniform': [0, 1], 'choice': [1]}}"),
    ("bool bounds", V, {"study.yaml": edit("uniform: [0, 0.01]", "randint: [false, true]")}, "{study}: sections[1].sample.sleep.randint: expected [low, high] with low < high", ""),
    # --- expgrid's own rules for universal fields, whatever the trainable ---------------------------
    ("epochs -1 toy", R, {"study.yaml": edit("epochs: 2", "epochs: -1")}, "{study}: defaults.epochs: expected an integer ≥ 1", "got -1"),
    ("epochs float in grid", V, {"study.yaml": edit("x: [0, 1]", "x: [0, 1], epochs: [1.5]")}, "{study}: sections[0].grid.epochs: expected an integer ≥ 1", "got 1.5"),
    ("epochs text in zip", V, {"study.yaml": edit("y: [0, 1]}", "y: [0, 1], epochs: [3, ten]}")}, "{study}: sections[1].zip.epochs: expected an integer ≥ 1", "got 'ten'"),
    ("epochs drawn as floats", S, {"study.yaml": edit("sleep: {uniform: [0, 0.01]}", "epochs: {uniform: [1, 3]}")}, "{study}: sections[1].sample.epochs: expected an integer ≥ 1", "got 1.0"),
    ("workers 0 fixed", V, {"study.yaml": section("fixed: {workers: 0}")}, "{study}: sections[0].fixed.workers: expected an integer ≥ 1", "got 0"),
    ("batch_size 0 no checks", R, {"study.yaml": edit("epochs: 2", "epochs: 2, batch_size: 0", FREE), "free_trainable.py": FREE_MODULE}, "{study}: defaults.batch_size: expected an integer ≥ 1", "got 0"),
    ("gpu_per_worker -1 no checks", V, {"study.yaml": edit("epochs: 2", "epochs: 2, gpu_per_worker: -1", FREE), "free_trainable.py": FREE_MODULE}, "{study}: defaults.gpu_per_worker: expected a GPU share", "got -1"),
    ("epochs -1 no checks", S, {"study.yaml": edit("epochs: 2", "epochs: -1", FREE), "free_trainable.py": FREE_MODULE}, "{study}: defaults.epochs: expected an integer ≥ 1", "got -1"),
    ("--set epochs 0", R + ["--set", "epochs=0"], {"study.yaml": GOOD}, "--set: epochs: expected an integer ≥ 1", "got 0"),
    # --- names that become directories -------------------------------------------------------------
    ("study ../../x", R, {"study.yaml": edit("study: s", "study: ../../x")}, f"{{study}}: study: {NAME_RULE}", "got '../../x'"),
    ("study /abs", R, {"study.yaml": edit("study: s", "study: /abs")}, f"{{study}}: study: {NAME_RULE}", "got '/abs'"),
    ("study unicode", V, {"study.yaml": edit("study: s", "study: étude")}, f"{{study}}: study: {NAME_RULE}", "got 'étude'"),
    ("study hidden", V, {"study.yaml": edit("study: s", "study: .s")}, f"{{study}}: study: {NAME_RULE}", "got '.s'"),
    ("study with space", S, {"study.yaml": edit("study: s", "study: my study")}, f"{{study}}: study: {NAME_RULE}", "got 'my study'"),
    ("study empty", V, {"study.yaml": edit("study: s", "study: ''")}, f"{{study}}: study: {NAME_RULE}", "got ''"),
    ("study a list", V, {"study.yaml": edit("study: s", "study: [s]")}, f"{{study}}: study: {NAME_RULE}", "got ['s']"),
    ("section id ..", R, {"study.yaml": edit('id: "1"', 'id: ".."')}, f"{{study}}: sections[0].id: {NAME_RULE}", "got '..'"),
    ("section id a/b", V, {"study.yaml": edit('id: "1"', 'id: "a/b"')}, f"{{study}}: sections[0].id: {NAME_RULE}", "got 'a/b'"),
    ("section id too long", V, {"study.yaml": edit('id: "1"', f'id: "{"a" * 101}"')}, f"{{study}}: sections[0].id: {NAME_RULE}", ""),
    ("section id float", V, {"study.yaml": edit('id: "1"', "id: 3.1")}, '{study}: sections[0].id: expected a string such as "3.1"', "got 3.1"),
    # --- wrong types, unknown keys, structure ------------------------------------------------------
    ("metric a number", V, {"study.yaml": edit("metric: score", "metric: 5")}, "{study}: metric: expected a non-empty string", "got 5"),
    ("mode unknown", V, {"study.yaml": edit("metric: score", "metric: score\nmode: maximise")}, "{study}: mode: expected one of max, min", "got 'maximise'"),
    ("report not a list", V, {"study.yaml": edit("metric: score", "metric: score\nreport: loss")}, "{study}: report: expected a list", "got 'loss'"),
    ("seed a float", V, {"study.yaml": edit("study: s", "study: s\nseed: 1.5")}, "{study}: seed: expected an integer", "got 1.5"),
    ("seed a bool", S, {"study.yaml": edit("study: s", "study: s\nseed: yes")}, "{study}: seed: expected an integer", "got True"),
    ("defaults a list", V, {"study.yaml": edit("defaults: {epochs: 2}", "defaults: [1, 2]")}, "{study}: defaults: expected a mapping", "got [1, 2]"),
    ("sections a mapping", V, {"study.yaml": GOOD.split("sections:")[0] + "sections: {a: 1}\n"}, "{study}: sections: expected a non-empty list of sections", ""),
    ("sections empty", R, {"study.yaml": GOOD.split("sections:")[0] + "sections: []\n"}, "{study}: sections: expected a non-empty list of sections", "got []"),
    ("section a number", V, {"study.yaml": GOOD.split("sections:")[0] + "sections: [1]\n"}, "{study}: sections[0]: expected a mapping describing a section", "got 1"),
    ("grid a list", V, {"study.yaml": edit("grid: {x: [0, 1]}", "grid: [0, 1]")}, "{study}: sections[0].grid: expected a mapping of parameter → list of values", ""),
    ("grid value a scalar", V, {"study.yaml": edit("grid: {x: [0, 1]}", "grid: {x: 3}")}, "{study}: sections[0].grid.x: expected a non-empty list of values", "got 3"),
    ("grid value empty", S, {"study.yaml": edit("grid: {x: [0, 1]}", "grid: {x: []}")}, "{study}: sections[0].grid.x: expected a non-empty list of values", "got []"),
    ("num_samples 0", V, {"study.yaml": edit("sample: {sleep: {uniform: [0, 0.01]}}", "sample: {sleep: {uniform: [0, 0.01]}}\n    num_samples: 0")}, "{study}: sections[1].num_samples: expected an integer ≥ 1", "got 0"),
    ("num_samples without sample", V, {"study.yaml": section("num_samples: 3")}, "{study}: sections[0].num_samples: expected `sample` parameters", ""),
    ("inherit a number", V, {"study.yaml": section("inherit: 5")}, "{study}: sections[0].inherit: expected previous, none, or a list of earlier section ids", "got 5"),
    ("inherit a later section", R, {"study.yaml": section('inherit: ["2"]')}, "{study}: sections[0].inherit: expected ids of earlier sections (none)", "got '2'"),
    ("section epochs 0", V, {"study.yaml": section("epochs: 0")}, "{study}: sections[0].epochs: expected an integer ≥ 1", "got 0"),
    ("select unknown", V, {"study.yaml": section("select: best")}, "{study}: sections[0].select: expected one of last_epoch, best_epoch", ""),
    ("scheduler a number", V, {"study.yaml": edit("resources: {cpu: 1}", "scheduler: 3")}, "{study}: scheduler: expected one of fifo, asha", "got 3"),
    ("grace_period 0", V, {"study.yaml": section("scheduler: {asha: {grace_period: 0}}")}, "{study}: sections[0].scheduler.asha.grace_period: expected an integer ≥ 1", ""),
    ("reduction_factor a bool", V, {"study.yaml": edit("resources: {cpu: 1}", "scheduler: {asha: {reduction_factor: yes}}")}, "{study}: scheduler.asha.reduction_factor: expected a number > 1", "got True"),
    ("asha unknown option", V, {"study.yaml": edit("resources: {cpu: 1}", "scheduler: {asha: {rungs: 3}}")}, "{study}: scheduler.asha.rungs: expected a known key", ""),
    ("early stopping without monitor", V, {"study.yaml": section("early_stopping: {patience: 3}")}, "{study}: sections[0].early_stopping.monitor: expected the metric to watch", ""),
    ("patience 0", V, {"study.yaml": section("early_stopping: {monitor: loss, patience: 0}")}, "{study}: sections[0].early_stopping.patience: expected an integer ≥ 1", ""),
    ("monitor not reported", S, {"study.yaml": section("early_stopping: {monitor: val_loss}")}, "{study}: sections[0].early_stopping.monitor: expected a metric trainable 'toy' reports", ""),
    ("max_failures -1", V, {"study.yaml": edit("resources: {cpu: 1}", "max_failures: -1")}, "{study}: max_failures: expected an integer ≥ 0", "got -1"),
    ("checkpoint_every 0", V, {"study.yaml": section("checkpoint_every: 0")}, "{study}: sections[0].checkpoint_every: expected an integer ≥ 1", ""),
    ("cpu 0", V, {"study.yaml": edit("cpu: 1", "cpu: 0")}, "{study}: resources.cpu: expected a number > 0", "got 0"),
    ("cpu text", V, {"study.yaml": edit("cpu: 1", "cpu: one")}, "{study}: resources.cpu: expected a number ≥ 0", "got 'one'"),
    ("cpu a bool", R, {"study.yaml": edit("cpu: 1", "cpu: true")}, "{study}: resources.cpu: expected a number ≥ 0", "got True"),
    ("gpu 1.5", V, {"study.yaml": edit("cpu: 1", "cpu: 1, gpu: 1.5")}, "{study}: resources.gpu: expected a fraction in (0, 1] or a whole number", ""),
    ("resources unknown key", V, {"study.yaml": edit("cpu: 1", "cpu: 1, tpu: 1")}, "{study}: resources.tpu: expected a known key", ""),
    ("max_concurrent 0", V, {"study.yaml": edit("resources: {cpu: 1}", "max_concurrent: 0")}, "{study}: max_concurrent: expected an integer ≥ 1", "got 0"),
    ("unknown top key", V, {"study.yaml": edit("metric: score", "metric: score\nmetrik: x")}, "{study}: metrik: expected a known key", "did you mean metric"),
    ("unknown section key", V, {"study.yaml": section("grdi: {}")}, "{study}: sections[0].grdi: expected a known key", "did you mean grid"),
    ("metric missing", V, {"study.yaml": GOOD.replace("metric: score\n", "")}, "{study}: metric: expected this key to be present", ""),
    ("metric not reported", R, {"study.yaml": edit("metric: score", "metric: accuracy")}, "{study}: metric: expected a metric trainable 'toy' reports", "got 'accuracy'"),
    ("dotted spellings clash", V, {"study.yaml": edit("defaults: {epochs: 2}", "defaults: {epochs: 2, x: 1, x.a: 2}")}, "{study}: defaults.x", ""),
    ("swept twice", V, {"study.yaml": edit("zip: {x: [1, 2], y: [0, 1]}", "grid: {y: [3]}\n    zip: {x: [1, 2], y: [0, 1]}")}, "{study}: sections[1]: expected each parameter swept once", "got 'y'"),
    ("fixed and swept", V, {"study.yaml": section("fixed: {x: 3}")}, "{study}: sections[0].fixed.x: expected a parameter the section does not also sweep", ""),
    ("zip lengths", V, {"study.yaml": edit("y: [0, 1]}", "y: [0, 1, 2]}")}, "{study}: sections[1].zip: expected lists of equal length", ""),
    ("unknown grid parameter", V, {"study.yaml": edit("grid: {x: [0, 1]}", "grid: {z: [0, 1]}")}, "{study}: sections[0].grid.z: expected a parameter trainable 'toy' accepts", ""),
    ("unknown zip parameter", S, {"study.yaml": edit("zip: {x: [1, 2], y: [0, 1]}", "zip: {x: [1, 2], z: [0, 1]}")}, "{study}: sections[1].zip.z: expected a parameter trainable 'toy' accepts", ""),
    ("unknown sample parameter", V, {"study.yaml": edit("sleep: {uniform", "slep: {uniform")}, "{study}: sections[1].sample.slep: expected a parameter trainable 'toy' accepts", "did you mean sleep"),
    ("toy x text", V, {"study.yaml": edit("x: [0, 1]", "x: [0, one]")}, "{study}: sections[0].grid.x: expected a number", "got 'one'"),
    ("toy sleep negative", V, {"study.yaml": edit("uniform: [0, 0.01]", "uniform: [-1, 0.01]")}, "{study}: sections[1].sample.sleep: expected a number of seconds ≥ 0", "got -1.0"),
    # --- sample and zip values a trainable's check refuses are named where they are set -------------
    ("zip value classify", V, {"study.yaml": edit("grid: {optimizer.lr: [0.1, 0.01]}", "zip: {optimizer.name: [adam, sdg], optimizer.lr: [0.1, 0.01]}", CLASSIFY)}, "{study}: sections[0].zip.optimizer.name: expected a registered optimizer", "did you mean sgd"),
    ("sample value classify", V, {"study.yaml": edit("grid: {optimizer.lr: [0.1, 0.01]}", "sample: {optimizer.name: {choice: [adam, sdg]}}", CLASSIFY)}, "{study}: sections[0].sample.optimizer.name: expected a registered optimizer", ""),
    ("sample range classify", S, {"study.yaml": edit("grid: {optimizer.lr: [0.1, 0.01]}", "sample: {model.dropout: {uniform: [0, 2]}}", CLASSIFY)}, "{study}: sections[0].sample.model.dropout: expected a probability", ""),
    ("--set value classify", V + ["--set", "optimizer.name=sdg"], {"study.yaml": CLASSIFY}, "--set: optimizer.name: expected a registered optimizer", ""),
    # --- options -------------------------------------------------------------------------------------
    ("--set unclosed list", R + ["--set", "x=[1"], {"study.yaml": GOOD}, "--set: x: expected a plain YAML value", "got '[1'"),
    ("--set python tag", R + ["--set", "x=!!python/object/apply:os.system [ls]"], {"study.yaml": GOOD}, "--set: x: expected a plain YAML value", "without tags"),
    ("--set duplicate key", V + ["--set", "x={{a: 1, a: 2}}"], {"study.yaml": GOOD}, "--set: x: expected a plain YAML value", "(each key once in a mapping)"),
    ("--set no =", V + ["--set", "x"], {"study.yaml": GOOD}, "--set: expected KEY=VALUE, e.g. optimizer.lr=0.01", "got 'x'"),
    ("--set no key", S + ["--set", "=1"], {"study.yaml": GOOD}, "--set: expected KEY=VALUE", "got '=1'"),
    ("--set unknown parameter", V + ["--set", "q=1"], {"study.yaml": GOOD}, "--set: q: expected a parameter trainable 'toy' accepts", ""),
    ("--set empty part", V + ["--set", "a..b=1"], {"study.yaml": GOOD}, "--set: a..b: expected a dotted key without empty parts", ""),
    ("--data-root toy", V + ["--data-root", "{tmp}"], {"study.yaml": GOOD}, "--data-root: dataset: expected a parameter trainable 'toy' accepts", ""),
    ("--results a file", ["run", "{study}", "--results", "{tmp}/in/study.yaml"], {"study.yaml": GOOD}, "--results: expected a directory (or a path to create one at)", "(a file)"),
    ("--results under a file", ["run", "{study}", "--results", "{tmp}/in/study.yaml/r"], {"study.yaml": GOOD}, "--results: expected a directory", "(under the file {tmp}/in/study.yaml)"),
    ("validate --results a file", ["validate", "{study}", "--results", "{tmp}/in/study.yaml"], {"study.yaml": GOOD}, "--results: expected a directory", "(a file)"),
    ("show --results under a file", ["show", "{study}", "--results", "{tmp}/in/study.yaml/x/y"], {"study.yaml": GOOD}, "--results: expected a directory", "under the file"),
    ("default results under a file", ["run", "{study}"], {"study.yaml": GOOD, "../cwd/results": "not a directory"}, "--results: expected a directory", "got 'results/s' (under the file {tmp}/cwd/results)"),
    ("--storage a file", R + ["--storage", "{tmp}/in/study.yaml"], {"study.yaml": GOOD}, "--storage: expected a directory", "(a file)"),
    ("--tracking-uri garbage", R + ["--tracking-uri", "garbage://x"], {"study.yaml": GOOD}, "--tracking-uri: expected a URI of a scheme MLflow has a tracking store for", "got 'garbage://x'"),
    ("--tracking-uri http without host", R + ["--tracking-uri", "http://"], {"study.yaml": GOOD}, "--tracking-uri: expected http://HOST[:PORT]", ""),
    ("--tracking-uri empty", R + ["--tracking-uri", ""], {"study.yaml": GOOD}, "--tracking-uri: expected a tracking URI", "got ''"),
    ("--tracking-uri bad engine", R + ["--tracking-uri", "mysql+a+b://h/db"], {"study.yaml": GOOD}, "--tracking-uri: expected a database URI", ""),
    ("MLFLOW_TRACKING_URI garbage", R, {"study.yaml": GOOD, "env:MLFLOW_TRACKING_URI": "garbage://x"}, "MLFLOW_TRACKING_URI: expected a URI of a scheme MLflow has", ""),
    ("sync --tracking-uri garbage", ["sync", "{tmp}/in", "--tracking-uri", "nope://x"], {}, "--tracking-uri: expected a URI of a scheme", ""),
    ("--max-concurrent 0", R + ["--max-concurrent", "0"], {"study.yaml": GOOD}, "--max-concurrent: expected an integer ≥ 1, got 0", ""),
    ("--max-concurrent text", R + ["--max-concurrent", "two"], {"study.yaml": GOOD}, "--max-concurrent: expected an integer ≥ 1, got 'two'", ""),
    ("--num-cpus -1", R + ["--num-cpus", "-1"], {"study.yaml": GOOD}, "--num-cpus: expected an integer ≥ 1, got -1", ""),
    ("unknown option", R + ["--bogus", "1"], {"study.yaml": GOOD}, "--bogus: expected an option of expgrid run", ""),
    ("missing study", ["run"], {}, "study: expected a value", ""),
    ("--set without value", V + ["--set"], {"study.yaml": GOOD}, "--set: expected a value after it, got none", ""),
    ("--local and --address", R + ["--local", "--address", "auto"], {"study.yaml": GOOD}, "--address: expected either --local or --address, got both", ""),
    ("unknown command", ["runn", "{study}"], {"study.yaml": GOOD}, "COMMAND: expected one of run, validate", "got 'runn'"),
    ("no command", [], {}, "COMMAND: expected one of run, validate, show", "got none"),
    ("switch with a value", V + ["--smoke=1"], {"study.yaml": GOOD}, "--smoke: expected no value", ""),
    ("extra argument", V + ["more"], {"study.yaml": GOOD}, "more: expected no further argument", ""),
    ("--format unknown", ["report", "{tmp}/in", "--format", "pdf"], {}, "--format: expected one of text, markdown", "got 'pdf'"),
    ("--sections unknown", R + ["--sections", "1,9"], {"study.yaml": GOOD}, "--sections: expected section ids of {study}: 1, 2", "got '9'"),
    ("--smoke without smoke settings", R + ["--smoke"], {"study.yaml": GOOD}, "{study}: trainable: expected a trainable with smoke settings for --smoke", ""),
]


def _tree(root: Path) -> dict[str, int]:
    """Every path under ``root`` with its size (Python's own bytecode caches left out)."""
    return {str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1
            for p in root.rglob("*") if "__pycache__" not in p.parts}  # fmt: skip


def _ray_started() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture
def tripwire(monkeypatch):
    """The runner may not be reached by a refused input (it would make the results directory,
    the MLflow store, and start Ray)."""
    import expgrid.runner

    def reached(*args, **kwargs):
        raise AssertionError("run_study was reached: the input was not refused before the run")

    monkeypatch.setattr(expgrid.runner, "run_study", reached)


def test_the_table_covers_every_class_of_the_issue():
    assert len(ROWS) >= 60 and len({r[0] for r in ROWS}) == len(ROWS)
    commands = {r[1][0] if r[1] else "" for r in ROWS}
    assert {"run", "validate", "show"} <= commands


@pytest.mark.parametrize("argv,files,start,fragment", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_nothing_happens(argv, files, start, fragment, tmp_path, monkeypatch, capsys, tripwire):
    inputs, cwd = tmp_path / "in", tmp_path / "cwd"
    inputs.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for name, content in files.items():
        if name.startswith("env:"):
            monkeypatch.setenv(name[4:], content)
            continue
        path = (cwd if name.endswith(".py") else inputs) / name  # modules: importable from the cwd
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    places = {"study": str(inputs / "study.yaml"), "res": str(tmp_path / "res"), "tmp": str(tmp_path)}
    before = _tree(tmp_path)
    ray_before = _ray_started()  # the whole suite's session Ray may be up already

    try:
        code = main([a.format(**places) for a in argv])
    except SystemExit as e:  # argparse's errors end the parse this way
        code = e.code

    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: " + start.format(**places)), lines[0]
    assert fragment.format(**places) in lines[0]
    assert "Traceback" not in err + out
    assert _tree(tmp_path) == before  # no results directory, no MLflow store, nothing at all
    assert not (tmp_path / "res").exists()
    # Ray not started by the command (where it is up already, the tripwire says the runner,
    # which alone starts it, was not reached; PROCESS_ROWS check a fresh process).
    assert _ray_started() == ray_before


# The real command in a fresh process: no traceback anywhere, Ray not even imported.
PROCESS_ROWS = [
    ("non-utf8", ["run", "{study}", "--results", "{res}"], b"study: s\xff\n", "{study}: line 1: expected UTF-8 text"),
    ("deep nesting", ["validate", "{study}"], GOOD.encode() + b"description: " + b"[" * 5000 + b"\n", "{study}: line 13: expected at most 32 levels"),
    ("--set tag", ["run", "{study}", "--results", "{res}", "--set", "x=!!python/object:os.system x"], GOOD.encode(), "--set: x: expected a plain YAML value"),
    ("unknown option", ["run", "{study}", "--nope"], GOOD.encode(), "--nope: expected an option of expgrid run"),
]


@pytest.mark.parametrize("argv,content,start", [r[1:] for r in PROCESS_ROWS], ids=[r[0] for r in PROCESS_ROWS])
def test_the_real_command_prints_one_line_without_importing_ray(argv, content, start, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_bytes(content)
    places = {"study": str(study), "res": str(tmp_path / "res")}
    # The command ends with os._exit (expgrid.cli.leave), which skips `finally`: the tripwire
    # wraps it. An error argparse raises ends through SystemExit and the `finally`.
    code = ("import os, runpy, sys; sys.argv = ['expgrid', *sys.argv[1:]]\n"
            "def tell(): print('RAY_IMPORTED' if 'ray' in sys.modules else 'RAY_NOT_IMPORTED', flush=True)\n"
            "real_exit = os._exit\n"
            "def _exit(code):\n    tell(); real_exit(code)\n"
            "os._exit = _exit\n"
            "try:\n    runpy.run_module('expgrid', run_name='__main__')\n"
            "finally:\n    tell()\n")  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", code, *(a.format(**places) for a in argv)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=180, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: " + start.format(**places))
    assert "Traceback" not in proc.stderr
    assert "RAY_NOT_IMPORTED" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_validate_and_show_say_where_results_go(tmp_path, monkeypatch, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(study)]) == 0
    assert f"Results would go to {tmp_path / 'results' / 's'}\n" in capsys.readouterr().out
    assert main(["show", str(study), "--results", "elsewhere/r"]) == 0
    assert f"  results in {tmp_path / 'elsewhere' / 'r'}\n" in capsys.readouterr().out
    assert main(["validate", str(study), "--smoke", "--set", "epochs=1"]) == 2  # toy has no smoke settings
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # validate and show create nothing
