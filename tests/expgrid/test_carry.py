"""Top-k carry (``inherit: {from: …, top: k}``), one-trial sections and the shorthand beside
dotted keys: parsing and its one-line errors, ranking and planning without Ray, then a toy study
on a real local Ray with a real MLflow store."""

from __future__ import annotations

import csv
import io
import json

import pytest
from mlflow.tracking import MlflowClient

from expgrid.carry import Parent, carry, shortfall, top_configurations
from expgrid.cli import main
from expgrid.errors import ConfigError
from expgrid.outcomes import SectionOutcome
from expgrid.planning import SMOKE_TRIALS, base_config, fingerprint, plan_section, swept_names
from expgrid.records import TrialRecord, read_section, read_trials
from expgrid.runner import RunOptions, prepare, run_study
from expgrid.study import load_study, parse_study
from expgrid.trainable_lookup import resolve_trainable

TOY = {"study": "t", "trainable": "toy", "metric": "score", "defaults": {"epochs": 2}}


def _study(*sections, **extra):
    return parse_study({**TOY, **extra, "sections": list(sections)})


def _trial(index, swept, score, history=None):
    rows = history or [{"epoch": 1, "score": score}]
    return TrialRecord(index=index, swept=swept, config={}, status="completed", history=rows)


# --- the forms -----------------------------------------------------------------------------


def test_the_inherit_forms_parse_into_sections_and_top_multiplies_the_trials():
    study = _study(
        {"id": "1", "grid": {"x": [0, 1, 2]}},
        {"id": "2", "inherit": {"from": ["1"], "top": 2}, "grid": {"y": [0, 1, 2, 3]}},
        {"id": "3", "inherit": {"from": "previous", "top": 3}},
        {"id": "4", "inherit": {"top": 1}, "grid": {"y": [0]}},
        {"id": "5", "inherit": {"from": ["1", "2"]}, "grid": {"y": [0]}},  # no top: the list form
        {"id": "6"},
    )
    s1, s2, s3, s4, s5, s6 = study.sections
    assert (s2.inherit, s2.top, s2.num_trials) == (("1",), 2, 8)
    assert (s3.inherit, s3.top, s3.num_trials) == ("previous", 3, 3)  # no sweep: one trial per parent
    assert (s4.inherit, s4.top) == ("previous", 1)  # `from` defaults to previous
    assert (s5.inherit, s5.top) == (("1", "2"), None)
    assert (s6.swept, s6.num_trials) == ((), 1)  # sweeps nothing: one trial


# One line each, exit 2, through the CLI; (what, the section's inherit, the line's start, a fragment)
BAD = [
    ("k 0", "{from: [\"1\"], top: 0}", "sections[1].inherit.top: expected an integer ≥ 1", "got 0"),
    ("k negative", "{from: [\"1\"], top: -2}", "sections[1].inherit.top: expected an integer ≥ 1", "got -2"),
    ("k a float", "{from: [\"1\"], top: 2.5}", "sections[1].inherit.top: expected an integer ≥ 1", "got 2.5"),
    ("k a string", "{from: [\"1\"], top: \"2\"}", "sections[1].inherit.top: expected an integer ≥ 1", "got '2'"),
    ("k a bool", "{from: [\"1\"], top: yes}", "sections[1].inherit.top: expected an integer ≥ 1", "got True"),
    ("k above the parent's trials", "{from: [\"1\"], top: 4}",
     "sections[1].inherit.top: expected at most 3 (the trials of section 1)", "got 4"),
    ("top with none", "{from: none, top: 2}",
     "sections[1].inherit.from: expected earlier sections to carry the 2 best configurations of", "got 'none'"),
    ("unknown id", "{from: [\"9\"], top: 2}", "sections[1].inherit.from: expected ids of earlier sections (1)", "got '9'"),
    ("a later id", "{from: [\"2\"], top: 1}", "sections[1].inherit.from: expected ids of earlier sections (1)", "got '2'"),
    ("from a number", "{from: 1, top: 2}", "sections[1].inherit.from: expected previous, none, or a list", "got 1"),
    ("from a mapping", "{from: {a: 1}, top: 2}", "sections[1].inherit.from: expected previous, none, or a list", ""),
    ("unknown key", "{from: [\"1\"], best: 2}", "sections[1].inherit.best: expected a known key: one of from, top", ""),
    ("empty from", "{from: [], top: 1}", "sections[1].inherit.from: expected an earlier section to carry the 1 best", "got []"),
    ("a plain string", "best", "sections[1].inherit: expected previous, none, or a list of earlier section ids", "got 'best'"),
]


@pytest.mark.parametrize("inherit,start,fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_top_carry_is_one_line_and_exit_2(inherit, start, fragment, tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(
        "study: t\ntrainable: toy\nmetric: score\nsections:\n"
        '  - {id: "1", grid: {x: [0, 1, 2]}}\n'
        f'  - {{id: "2", inherit: {inherit}, grid: {{y: [0]}}}}\n'
    )
    code = main(["validate", str(path), "--results", str(tmp_path / "res")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: {start}") and fragment in err, err
    assert not (tmp_path / "res").exists()


def test_top_on_the_first_section_has_nothing_to_carry():
    with pytest.raises(ConfigError) as caught:
        _study({"id": "1", "inherit": {"top": 2}, "grid": {"x": [0]}})
    assert str(caught.value) == ("sections[0].inherit.from: expected an earlier section to carry the 2 best "
                                 "configurations of, got no earlier section")  # fmt: skip


# --- which configurations are carried ------------------------------------------------------


def test_the_k_best_by_the_metric_are_carried_in_order_ties_to_the_earlier_trial():
    study = _study({"id": "1", "grid": {"x": [0, 1, 2, 3]}}, {"id": "2", "inherit": {"top": 3}, "grid": {"y": [0]}})
    parent, child = study.sections
    trials = [_trial(0, {"x": 0}, 0.2), _trial(1, {"x": 1}, 0.9), _trial(2, {"x": 2}, 0.5), _trial(3, {"x": 3}, 0.9)]
    trials.append(TrialRecord(index=4, swept={"x": 4}, config={}, status="failed", error="boom"))
    chosen = top_configurations(study, child, parent, trials)
    assert [(p.trial, p.values, p.score) for p in chosen] == [(1, {"x": 1}, 0.9), (3, {"x": 3}, 0.9), (2, {"x": 2}, 0.5)]
    low = parse_study({**TOY, "mode": "min", "sections": [dict(s) for s in
                       ({"id": "1", "grid": {"x": [0, 1, 2, 3]}}, {"id": "2", "inherit": {"top": 2}})]})  # fmt: skip
    assert [p.trial for p in top_configurations(low, low.sections[1], low.sections[0], trials)] == [0, 2]


def test_the_parents_select_scores_them():
    study = _study({"id": "1", "grid": {"x": [0, 1]}, "select": "best_epoch"}, {"id": "2", "inherit": {"top": 1}})
    trials = [_trial(0, {"x": 0}, 0, [{"epoch": 1, "score": 0.9}, {"epoch": 2, "score": 0.1}]),
              _trial(1, {"x": 1}, 0, [{"epoch": 1, "score": 0.5}, {"epoch": 2, "score": 0.6}])]  # fmt: skip
    assert [p.trial for p in top_configurations(study, study.sections[1], study.sections[0], trials)] == [0]
    last = _study({"id": "1", "grid": {"x": [0, 1]}}, {"id": "2", "inherit": {"top": 1}})
    assert [p.trial for p in top_configurations(last, last.sections[1], last.sections[0], trials)] == [1]


def test_what_the_section_sets_itself_is_not_carried_and_equal_configurations_count_once():
    # The coursework's case: optimiser × dropout, then dropout rates for the two best optimisers.
    study = _study(
        {"id": "1", "zip": {"x": [0, 1, 2]}, "grid": {"y": [0, 1]}},
        {"id": "2", "inherit": {"from": ["1"], "top": 2}, "grid": {"y": [5, 6, 7]}},
    )
    trials = [_trial(0, {"x": 0, "y": 0}, 0.1), _trial(1, {"x": 1, "y": 0}, 0.8), _trial(2, {"x": 2, "y": 0}, 0.3),
              _trial(3, {"x": 0, "y": 1}, 0.2), _trial(4, {"x": 1, "y": 1}, 0.9), _trial(5, {"x": 2, "y": 1}, 0.7)]  # fmt: skip
    chosen = top_configurations(study, study.sections[1], study.sections[0], trials)
    assert [(p.trial, p.values) for p in chosen] == [(4, {"x": 1}), (5, {"x": 2})]  # not x=1 twice
    assert shortfall(study.sections[1], chosen) is None
    one = chosen[:1]
    assert shortfall(study.sections[1], one) == ("section 2 carries the 2 best configurations of section 1, which has "
                                                 "only 1 distinct scored one: its trials start from 1/4")  # fmt: skip


def test_other_inherited_sections_give_their_single_best_and_the_nearest_its_top_k():
    study = _study(
        {"id": "1", "grid": {"x": [0, 1]}},
        {"id": "2", "grid": {"y": [0, 1]}},
        {"id": "3", "inherit": {"from": "previous", "top": 2}, "grid": {"sleep": [0.0]}},
    )
    s1, s2, s3 = study.sections
    one = [_trial(0, {"x": 0}, 0.1), _trial(1, {"x": 1}, 0.9)]
    two = [_trial(0, {"y": 0}, 0.4), _trial(1, {"y": 1}, 0.3)]
    finished = {"1": SectionOutcome(s1, one, one[1], False, 0.0), "2": SectionOutcome(s2, two, two[0], False, 0.0)}
    values, parents = carry(study, s3, finished)
    assert values == {"x": 1} and [(p.section, p.trial, p.values) for p in parents] == [("2", 0, {"y": 0}), ("2", 1, {"y": 1})]
    with pytest.raises(KeyError):
        carry(study, s3, {"1": finished["1"]})


# --- planning ------------------------------------------------------------------------------


def test_the_trials_are_the_sweep_crossed_with_the_parents_parent_major():
    study = _study({"id": "1", "grid": {"x": [0, 1, 2]}}, {"id": "2", "inherit": {"from": ["1"], "top": 2},
                                                          "grid": {"y": [-1, 1]}, "fixed": {"sleep": 0.0}})  # fmt: skip
    spec = resolve_trainable("toy")
    parents = [Parent("1", 2, {"x": 2}, 0.9), Parent("1", 0, {"x": 0}, 0.5)]
    plans = plan_section(study, spec, study.sections[1], {}, parents)
    assert [p.swept for p in plans] == [{"x": 2, "y": -1}, {"x": 2, "y": 1}, {"x": 0, "y": -1}, {"x": 0, "y": 1}]
    assert [(p.config["x"], p.config["y"], p.config["sleep"]) for p in plans] == [(2, -1, 0.0), (2, 1, 0.0), (0, -1, 0.0), (0, 1, 0.0)]
    assert [p.parent.label for p in plans] == ["1/2", "1/2", "1/0", "1/0"]
    assert swept_names(study.sections[1], plans) == ("x", "y")
    # A parent trial other than the one carried before (same values): the section runs again.
    moved = plan_section(study, spec, study.sections[1], {}, [Parent("1", 1, {"x": 2}), Parent("1", 0, {"x": 0})])
    assert [p.config for p in moved] == [p.config for p in plans]
    assert fingerprint(study, study.sections[1], moved) != fingerprint(study, study.sections[1], plans)
    swapped = plan_section(study, spec, study.sections[1], {}, parents[::-1])
    assert fingerprint(study, study.sections[1], swapped) != fingerprint(study, study.sections[1], plans)


def test_a_smoke_run_gives_each_parent_a_trial():
    study = _study({"id": "1", "grid": {"x": [0, 1, 2]}}, {"id": "2", "inherit": {"top": 2}, "grid": {"y": [-1, 0, 1]}})
    import dataclasses

    smoke = dataclasses.replace(study, smoke=True)
    parents = [Parent("1", 2, {"x": 2}), Parent("1", 0, {"x": 0})]
    plans = plan_section(smoke, resolve_trainable("toy"), smoke.sections[1], {}, parents)
    assert len(plans) == SMOKE_TRIALS and [p.swept for p in plans] == [{"x": 2, "y": -1}, {"x": 0, "y": -1}]


def test_a_section_without_a_sweep_is_one_trial_of_its_base_config():
    study = _study({"id": "1", "grid": {"x": [0, 1]}}, {"id": "2", "fixed": {"y": 3}})
    spec = resolve_trainable("toy")
    (plan,) = plan_section(study, spec, study.sections[1], {"x": 1})
    assert plan.swept == {} and (plan.config["x"], plan.config["y"], plan.config["epochs"]) == (1, 3, 2)


# --- shorthand beside dotted keys ------------------------------------------------------------


CLASSIFY = """\
study: c
trainable: classify
metric: val_accuracy
defaults: {dataset: digits, model: mlp, model.hidden: [16], optimizer: adam, optimizer.lr: 0.01, epochs: 1}
sections:
  - {id: "1", fixed: {model: mlp, model.dropout: 0.2}, grid: {batch_size: [16]}}
"""


def test_a_name_shorthand_mixes_with_dotted_keys_below_it(write_study):
    spec = resolve_trainable("classify")
    study = load_study(write_study(CLASSIFY))
    assert study.defaults["model"] == {"name": "mlp", "hidden": [16]}
    assert study.defaults["optimizer"] == {"name": "adam", "lr": 0.01}
    config = base_config(study, spec, study.sections[0], {})
    assert config["model"]["name"] == "mlp" and config["model"]["hidden"] == [16] and config["model"]["dropout"] == 0.2
    assert config["optimizer"]["name"] == "adam" and config["optimizer"]["lr"] == 0.01
    # The same in the other order, and across layers: --set below a shorthand of the file.
    flipped = load_study(write_study(CLASSIFY.replace("model: mlp, model.hidden: [16]", "model.hidden: [16], model: mlp"), "f.yaml"))
    assert flipped.defaults["model"] == {"hidden": [16], "name": "mlp"}
    over = load_study(write_study(CLASSIFY.replace(", model.hidden: [16]", ""), "o.yaml"), {"model.hidden": [32]})
    assert over.defaults["model"] == {"name": "mlp", "hidden": [32]}
    both = load_study(write_study(CLASSIFY.replace(", model.hidden: [16]", ""), "s.yaml"), {"model": "cnn", "model.channels": [8]})
    assert both.defaults["model"] == {"name": "cnn", "channels": [8]}  # two --set values, one mapping
    prepare(write_study(CLASSIFY, "p.yaml"))  # the trainable's own check accepts it


def test_a_name_given_twice_is_refused_in_one_line(write_study, capsys):
    path = write_study(CLASSIFY.replace("model: mlp, model.hidden", "model: mlp, model.name: cnn, model.hidden"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}: defaults.model.name: expected each key given once\n"


# --- on a real local Ray ---------------------------------------------------------------------

STUDY = """
study: toy-carry
trainable: toy
metric: score
mode: max
defaults: {epochs: 2}
sections:
  - id: "1"
    name: X
    grid: {x: [0, 1.5, 2, 3.5, 5]}
  - id: "2"
    name: Y for the two best x
    inherit: {from: ["1"], top: 2}
    grid: {y: [-1, 0, 1]}
  - id: "3"
    name: Default run
"""


def _run(path, results):
    study, spec = prepare(path)
    stream = io.StringIO()
    outcome = run_study(study, spec, RunOptions(results_dir=results, stream=stream))
    return outcome, stream.getvalue()


def test_top_k_carry_runs_the_sweep_times_the_k_best_parents(ray_session, write_study, tmp_path):
    results = tmp_path / "results"
    outcome, text = _run(write_study(STUDY), results)
    # Scores: 1 - ((x-2)² + (y+1)²)/10, so section 1 ranks x=2 (trial 2), x=1.5 (trial 1), x=3.5 …
    two = read_trials(results, "2")
    assert [(t.swept, t.parent["section"], t.parent["trial"]) for t in two] == [
        ({"x": 2, "y": -1}, "1", 2), ({"x": 2, "y": 0}, "1", 2), ({"x": 2, "y": 1}, "1", 2),
        ({"x": 1.5, "y": -1}, "1", 1), ({"x": 1.5, "y": 0}, "1", 1), ({"x": 1.5, "y": 1}, "1", 1)]  # fmt: skip
    assert [(t.config["x"], t.config["y"]) for t in two] == [(t.swept["x"], t.swept["y"]) for t in two]
    saved = read_section(results, "2")
    assert [(p["trial"], p["values"]) for p in saved["carried"]] == [(2, {"x": 2}), (1, {"x": 1.5})]
    assert saved["swept"] == ["x", "y"] and saved["best"]["swept"] == {"x": 2, "y": -1}
    # The next section (inherit: previous) carries section 2's best, with the parent value that made it best.
    (three,) = read_trials(results, "3")
    assert three.swept == {} and (three.config["x"], three.config["y"]) == (2, -1) and three.status == "completed"

    table = list(csv.DictReader(io.StringIO((results / "sections" / "2" / "report" / "table.csv").read_text())))
    assert [(r["parent"], r["x"], r["y"]) for r in table] == [
        ("1/2", "2", "-1"), ("1/2", "2", "0"), ("1/2", "2", "1"), ("1/1", "1.5", "-1"), ("1/1", "1.5", "0"), ("1/1", "1.5", "1")]  # fmt: skip
    assert "trial 2 (x=2; score 0.675), trial 1 (x=1.5; score 0.6562)" in (results / "sections" / "2" / "report" / "table.md").read_text()
    one_trial = (results / "sections" / "3" / "report" / "table.csv").read_text().splitlines()
    assert one_trial[0].startswith("trial,score,") and len(one_trial) == 2
    assert "2 Y for the two best x: crosses its sweep with 1/2 (x=2), 1/1 (x=1.5)" in text
    assert "section 2 carried the 2 best of section 1: 1/2 (x=2), 1/1 (x=1.5)" in outcome.summary.to_text()
    assert "- section 2 carried the 2 best of section 1" in outcome.summary.to_markdown()
    summary = json.loads(json.dumps(outcome.summary.to_json()))
    assert [p["trial"] for p in summary[1]["carried"]] == [2, 1] and summary[2]["best"] == {}

    client = MlflowClient(outcome.tracking_uri)
    experiment = client.get_experiment_by_name("toy-carry").experiment_id
    runs = client.search_runs([experiment], "tags.`expgrid.section_id` = '2'")
    tags = {r.data.tags.get("expgrid.trial_index"): r.data.tags for r in runs}
    assert tags[None]["expgrid.carried"] == "1/2, 1/1"  # the section's run
    assert [(tags[str(i)]["expgrid.parent"], json.loads(tags[str(i)]["expgrid.parent_values"])) for i in range(6)] == [
        ("1/2", {"x": 2})] * 3 + [("1/1", {"x": 1.5})] * 3  # fmt: skip
    (run3,) = client.search_runs([experiment], "tags.`expgrid.section_id` = '3' and tags.`expgrid.kind` = 'trial'")
    assert run3.info.run_name == "3/0" and run3.info.status == "FINISHED"

    # `expgrid sync` into an empty store writes the same parent tags from the results alone.
    from expgrid.tracking.sync import sync

    uri, _ = sync(results, f"sqlite:///{tmp_path / 'synced.db'}")
    synced = MlflowClient(uri)
    runs = synced.search_runs([synced.get_experiment_by_name("toy-carry").experiment_id], "tags.`expgrid.section_id` = '2'")
    assert {r.data.tags.get("expgrid.trial_index"): (r.data.tags.get("expgrid.parent"), r.data.tags.get("expgrid.carried"))
            for r in runs} == {k: (v.get("expgrid.parent"), v.get("expgrid.carried")) for k, v in tags.items()}  # fmt: skip

    # Unchanged: every section is read back, the carry from the records. A parent that changed
    # (a better x in section 1) runs the sections that carry it again.
    _, again = _run(write_study(STUDY), results)
    assert again.count("finished earlier") == 3
    _, changed = _run(write_study(STUDY.replace("[0, 1.5, 2, 3.5, 5]", "[0, 1.5, 2, 3.5, 5, 1.9]")), results)
    assert "1 X: finished earlier" not in changed and "2 Y for the two best x: finished earlier" not in changed
    assert "3 Default run: finished earlier" in changed  # what it carries (x=2, y=-1) did not change
    assert [p["values"] for p in read_section(results, "2")["carried"]] == [{"x": 2}, {"x": 1.9}]
