"""Study files: what loads, and each broken rule's one message (file, field, expected, got)."""

import subprocess
import sys

import pytest

from expgrid.errors import OptionError, StudyFileError
from expgrid.study import load_study

GOOD = """
study: s
trainable: toy
metric: score
defaults: {epochs: 2}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 1, 2]}
  - id: "2"
    name: Y
    grid: {y: [0, 1]}
    zip: {x: [1, 2], epochs: [1, 3]}
    inherit: none
    select: best_epoch
"""


def test_a_good_study_loads_into_frozen_objects(write_study):
    study = load_study(write_study(GOOD))
    assert [s.id for s in study.sections] == ["1", "2"]
    assert study.sections[0].num_trials == 3
    assert study.sections[1].num_trials == 4  # 2 grid values × 2 zipped rows
    assert study.sections[1].inherit == "none" and study.sections[1].select.best_epoch
    with pytest.raises(AttributeError):
        study.metric = "loss"  # frozen


BROKEN = [
    ("unknown top key", GOOD.replace("metric: score", "metric: score\nmetrik: x"), "metrik: expected a known key"),
    ("wrong type", GOOD.replace("defaults: {epochs: 2}", "defaults: [1, 2]"), "defaults: expected a mapping"),
    ("empty grid", GOOD.replace("grid: {x: [0, 1, 2]}", "grid: {x: []}"), "sections[0].grid.x: expected a non-empty list of values, got []"),
    ("duplicate id", GOOD.replace('id: "2"', 'id: "1"'), "sections[1].id: expected section ids to be unique, got '1'"),
    ("float id", GOOD.replace('id: "2"', "id: 3.1"), 'sections[1].id: expected a string such as "3.1"'),
    ("bad mode", GOOD.replace("metric: score", "metric: score\nmode: maximise"), "mode: expected one of max, min, got 'maximise'"),
    ("bad select", GOOD.replace("select: best_epoch", "select: best"), "sections[1].select: expected one of last_epoch, best_epoch"),
    ("zip lengths", GOOD.replace("epochs: [1, 3]", "epochs: [1, 3, 5]"), "sections[1].zip: expected lists of equal length"),
    ("unknown section key", GOOD.replace("name: X", "name: X\n    grdi: {}"), "sections[0].grdi: expected a known key"),
    ("bad inherit", GOOD.replace("inherit: none", 'inherit: ["9"]'), "sections[1].inherit: expected ids of earlier sections"),
    ("bad resources", GOOD.replace("defaults:", "resources: {gpu: 1.5}\ndefaults:"), "resources.gpu: expected a fraction in (0, 1] or a whole number, got 1.5"),
]


@pytest.mark.parametrize("text,message", [(t, m) for _, t, m in BROKEN], ids=[n for n, _, _ in BROKEN])
def test_each_broken_rule_names_file_field_and_value(write_study, text, message):
    path = write_study(text)
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


CLASSIFY = """
study: c
trainable: classify
metric: val_accuracy
defaults: {dataset: digits, model: {name: mlp}, optimizer: {name: adam}}
sections:
  - {id: "1", grid: {optimizer.name: [adam, sgd]}}
"""

TRAINABLE_ERRORS = [
    ("unknown optimizer", CLASSIFY.replace("[adam, sgd]", "[adam, sdg]"), "sections[0].grid.optimizer.name: expected a registered optimizer", "did you mean sgd"),
    ("unknown model", CLASSIFY.replace("{name: mlp}", "{name: mpl}"), "defaults.model.name: expected a registered model", "mlp"),
    ("unknown dataset", CLASSIFY.replace("dataset: digits", "dataset: digit"), "defaults.dataset.name: expected a registered dataset", "digits"),
    ("unknown trainable", GOOD.replace("trainable: toy", "trainable: tyo"), "trainable: expected a registered trainable", "did you mean toy"),
    ("unknown parameter", GOOD.replace("grid: {x: [0, 1, 2]}", "grid: {z: [0, 1]}"), "sections[0].grid.z: expected a parameter trainable 'toy' accepts", "x, y"),
    ("unknown default", GOOD.replace("defaults: {epochs: 2}", "defaults: {epoch: 2}"), "defaults.epoch: expected a parameter", "did you mean epochs"),
    ("unknown metric", GOOD.replace("metric: score", "metric: accuracy"), "metric: expected a metric trainable 'toy' reports", "score"),
    ("missing import", GOOD.replace("trainable: toy", "trainable: no_such_pkg.mod:train"), "trainable: expected an importable module", "no_such_pkg"),
    # A value the trainable defaults, made invalid by the section's grid: the section and trial are named.
    ("mode needs weights", CLASSIFY.replace("grid: {optimizer.name: [adam, sgd]}", "grid: {mode: [scratch, fine_tune]}"),
     "sections[0].model.weights: expected for mode fine_tune, a path", "(for the trial mode=fine_tune)"),
    ("fixed value", CLASSIFY.replace('{id: "1", ', '{id: "1", fixed: {model.dropout: 2}, '),
     "sections[0].fixed.model.dropout: expected a probability", "got 2"),
]


# Every broken rule, structural or about the trainable, through the real CLI in a fresh process.
CLI_CASES = [(n, t, m, "") for n, t, m in BROKEN] + TRAINABLE_ERRORS


@pytest.mark.parametrize("text,message,hint", [t[1:] for t in CLI_CASES], ids=[t[0] for t in CLI_CASES])
def test_cli_rejects_with_exit_2_before_ray_is_even_imported(write_study, text, message, hint):
    path = write_study(text)
    code = (
        "import sys; from expgrid.cli import main; rc = main(['run', sys.argv[1]]);"
        "print('RAY_IMPORTED' if 'ray' in sys.modules else 'RAY_NOT_IMPORTED'); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {path}: {message}" in proc.stderr
    assert hint in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert "RAY_NOT_IMPORTED" in proc.stdout


def test_set_overrides_are_checked_like_the_file(write_study):
    from expgrid.runner import prepare

    study, _ = prepare(write_study(GOOD), {"x": 5})
    assert study.defaults["x"] == 5
    # A bad --set value is reported against the option, not the file it was laid over.
    with pytest.raises(OptionError, match="^--set: q: expected a parameter"):
        prepare(write_study(GOOD), {"q": 1})
    with pytest.raises(OptionError, match="^--set: epochs: expected an integer ≥ 1"):
        prepare(write_study(GOOD), {"epochs": 0})


def test_a_key_given_twice_is_refused_with_both_lines(write_study):
    path = write_study(GOOD.replace("metric: score", "metric: score\nmode: max\nmetric: loss"))
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    assert str(info.value) == f"{path}: line 6: expected each key once in a mapping, got 'metric' again (first on line 4)"


def test_a_yaml_merge_may_repeat_the_keys_it_merges(write_study):
    text = GOOD.replace("    grid: {x: [0, 1, 2]}", "    grid: {x: [0, 1, 2]}\n    fixed: &f {sleep: 0.0, rise_after: 3}").replace(
        "    select: best_epoch", "    select: best_epoch\n    fixed: {<<: *f, sleep: 0.5}")
    study = load_study(write_study(text))
    assert dict(study.sections[1].fixed) == {"sleep": 0.5, "rise_after": 3}  # the explicit key wins


def test_a_file_that_is_not_utf8_names_the_line(write_study):
    path = write_study("x")
    path.write_bytes(GOOD.encode().replace(b"name: Y", b"name: \xe9t\xe9"))
    with pytest.raises(StudyFileError, match=r": line 11: expected UTF-8 text, got b'\\xe9'$"):
        load_study(path)


@pytest.mark.parametrize("name", ["a", "3.1", "x-y_z.1", "A" * 100, "-x", "_", "digits-demo"])
def test_safe_names_are_accepted(write_study, name):
    study = load_study(write_study(GOOD.replace("study: s", f"study: '{name}'").replace('id: "1"', f"id: '{name}'")))
    assert study.name == study.sections[0].id == name


@pytest.mark.parametrize("name", ["..", ".", ".x", "a/b", "../../x", "/abs", "a b", "é", "A" * 101, "a\\\\b", "", "x\\n"])
def test_names_that_could_leave_the_results_directory_are_refused(write_study, name):
    with pytest.raises(StudyFileError, match=r": study: expected a name of ASCII letters"):
        load_study(write_study(GOOD.replace("study: s", f'study: "{name}"')))
    with pytest.raises(StudyFileError, match=r": sections\[0\]\.id: expected a name of ASCII letters"):
        load_study(write_study(GOOD.replace('id: "1"', f'id: "{name}"')))


def test_an_override_is_reported_against_the_option_that_gave_it(write_study):
    from expgrid.study import Overrides

    with pytest.raises(OptionError, match=r"^--set: x: expected a finite number, got nan$"):
        load_study(write_study(GOOD), {"x": float("nan")})
    overrides = Overrides({"epochs": 3, "dataset.root": "/data"}, {"dataset.root": "--data-root"})
    with pytest.raises(OptionError, match=r"^--data-root: dataset: expected a parameter trainable 'toy' accepts"):
        from expgrid.runner import prepare

        prepare(write_study(GOOD), overrides)
    study = load_study(write_study(GOOD), overrides)
    assert dict(study.overrides) == {"epochs": "--set", "dataset.root": "--data-root"}


@pytest.mark.parametrize(
    "ref,message",
    [(":fn", "expected a registered name or package.module:function"), ("a:b:c", "package.module:function"),
     ("..x:f", "package.module:function"), ("m:", "package.module:function"), ("1m:f", "package.module:function"),
     ("os:sep", "expected a function named 'sep' in module os"), ("no_such_mod_q:f", "an importable module")],
)  # fmt: skip
def test_malformed_trainable_refs_are_study_file_errors(ref, message):
    from expgrid.errors import ConfigError
    from expgrid.trainable_lookup import resolve_trainable

    with pytest.raises(ConfigError, match=message) as info:
        resolve_trainable(ref)
    assert info.value.field == "trainable"
