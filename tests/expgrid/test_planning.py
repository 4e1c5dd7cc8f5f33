import itertools

import pytest

from expgrid.errors import ConfigError, StudyFileError
from expgrid.planning import (
    FULL_CHECK_TRIALS,
    MAX_TRIALS,
    carried_values,
    check_study,
    check_universal,
    iter_sweep_points,
    plan_section,
    representative_points,
    sweep_points,
)
from expgrid.study import parse_study
from expgrid.trainable_lookup import resolve_trainable
from expgrid.trainable_spec import TrainableSpec

STUDY = {
    "study": "p",
    "trainable": "toy",
    "metric": "score",
    "seed": 7,
    "defaults": {"epochs": 4},
    "sections": [
        {"id": "a", "grid": {"x": [1, 2]}, "zip": {"y": [0, 1, 2], "epochs": [1, 2, 3]}},
        {"id": "b", "grid": {"y": [5]}, "sample": {"sleep": {"uniform": [0, 1]}}, "num_samples": 3},
        {"id": "c", "grid": {"y": [6]}, "inherit": "none"},
        {"id": "d", "grid": {"sleep": [0.0]}, "inherit": ["a"], "fixed": {"x": 9}, "epochs": 7},
    ],
}


def test_grid_is_crossed_with_zip_rows_which_vary_together():
    study = parse_study(STUDY)
    points = sweep_points(study, study.sections[0])
    assert points == [
        {"x": x, "y": y, "epochs": e} for x in (1, 2) for (y, e) in ((0, 1), (1, 2), (2, 3))
    ]


def test_samples_are_seeded_by_study_seed_and_section():
    study = parse_study(STUDY)
    first = sweep_points(study, study.sections[1])
    assert len(first) == 3 and len({p["sleep"] for p in first}) == 3
    assert sweep_points(parse_study(STUDY), study.sections[1]) == first
    assert sweep_points(parse_study({**STUDY, "seed": 8}), study.sections[1]) != first


def test_inheritance_carries_only_swept_best_values():
    study = parse_study(STUDY)
    spec = resolve_trainable("toy")
    bests = {"a": {"x": 2, "y": 1, "epochs": 2}, "b": {"y": 5, "sleep": 0.3}, "c": {"y": 6}}
    assert carried_values(study, study.sections[1], bests) == {"x": 2, "y": 1, "epochs": 2}
    assert carried_values(study, study.sections[2], bests) == {}
    plans = plan_section(study, spec, study.sections[3], carried_values(study, study.sections[3], bests))
    config = plans[0].config
    # inherited from a (x, y), fixed x wins over it, epochs override wins over inherited epochs
    assert (config["x"], config["y"], config["epochs"], config["sleep"]) == (9, 1, 7, 0.0)
    assert config["fail_at_epoch"] is None  # trainable defaults fill the rest


def _wide(params: int, values: int = 10) -> dict:
    """A study whose one section crosses ``params`` parameters of ``values`` values each."""
    grid = {f"p{i}": list(range(values)) for i in range(params)}
    return {"study": "w", "trainable": "t", "metric": "m", "sections": [{"id": "a", "grid": grid}]}


def test_counting_and_walking_a_huge_section_never_builds_it():
    study = parse_study(_wide(10))
    section = study.sections[0]
    assert section.num_trials == 10**10
    first = list(itertools.islice(iter_sweep_points(study, section), 3))
    assert first == [{**{f"p{i}": 0 for i in range(9)}, "p9": v} for v in (0, 1, 2)]
    points = representative_points(section)
    assert len(points) == 10  # the longest list, not the product
    assert all({p[f"p{i}"] for p in points} == set(range(10)) for i in range(10))


def test_a_section_above_the_limit_is_refused_with_its_count():
    spec = resolve_trainable("toy")
    huge = {**_wide(10)["sections"][0], "id": "b"}
    study = parse_study({"study": "w", "trainable": "toy", "metric": "score",
                         "sections": [{"id": "a", "grid": {"x": [0, 1]}}, huge]})  # fmt: skip
    with pytest.raises(StudyFileError, match=rf": sections\[1\]: expected at most {MAX_TRIALS} trials, got 10000000000$"):
        check_study(study, spec)


def test_representative_points_hold_each_value_zip_row_and_sampled_bound():
    study = parse_study({
        "study": "r", "trainable": "t", "metric": "m",
        "sections": [{"id": "a", "grid": {"g": [1, 2, 2, 3]}, "zip": {"z1": [1, 2], "z2": ["a", "b"]},
                      "sample": {"u": {"uniform": [0, 5]}, "c": {"choice": [[1], [2], [3], [4], [5]]}}}],
    })  # fmt: skip
    points = representative_points(study.sections[0])
    assert len(points) == 5  # five choices is the longest; the repeated 2 counts once
    assert {p["g"] for p in points} == {1, 2, 3}
    assert {(p["z1"], p["z2"]) for p in points} == {(1, "a"), (2, "b")}  # rows stay whole
    assert {p["u"] for p in points} == {0.0, 5.0} and all(isinstance(p["u"], float) for p in points)
    assert [p["c"] for p in points] == [[1], [2], [3], [4], [5]]


def _probe(calls: list, refuse=lambda config: False) -> TrainableSpec:
    """A trainable that declares nothing but a check, counting the configs it is shown."""

    def check(config):
        calls.append(config)
        if refuse(config):
            raise ConfigError("x", "x=1 only with y=1", config["x"])

    return TrainableSpec(name="probe", fn=lambda config: None, check=check)


def test_a_large_section_is_checked_on_a_bounded_set_of_trials():
    calls: list = []
    study = parse_study(_wide(5))  # 100 000 trials: the limit itself
    assert study.sections[0].num_trials == MAX_TRIALS > FULL_CHECK_TRIALS
    check_study(study, _probe(calls))
    assert len(calls) == 10


def test_a_small_section_has_every_trial_checked_so_combinations_are_seen():
    """(x=1, y=0) is not among the representative points (0, 0), (1, 1); the full check finds it."""
    study = parse_study({"study": "c", "trainable": "t", "metric": "m",
                         "sections": [{"id": "a", "grid": {"x": [0, 1], "y": [0, 1]}}]})  # fmt: skip
    assert {(p["x"], p["y"]) for p in representative_points(study.sections[0])} == {(0, 0), (1, 1)}
    with pytest.raises(StudyFileError, match=r"sections\[0\]\.grid\.x: expected x=1 only with y=1, got 1"):
        check_study(study, _probe([], refuse=lambda c: c["x"] == 1 and c["y"] == 0))


@pytest.mark.parametrize(
    "config,field",
    [({"epochs": 0}, "epochs"), ({"epochs": 2.0}, "epochs"), ({"epochs": True}, "epochs"), ({"epochs": None}, "epochs"),
     ({"batch_size": -3}, "batch_size"), ({"workers": 0}, "workers"), ({"workers": "2"}, "workers"),
     ({"gpu_per_worker": -1}, "gpu_per_worker"), ({"gpu_per_worker": 1.5}, "gpu_per_worker"),
     ({"gpu_per_worker": float("nan")}, "gpu_per_worker")],
)  # fmt: skip
def test_expgrids_own_keys_are_checked_in_every_trial_config(config, field):
    with pytest.raises(ConfigError) as info:
        check_universal(config)
    assert info.value.field == field


def test_expgrids_own_keys_accept_what_expgrid_can_run():
    check_universal({"epochs": 1, "batch_size": 512, "workers": 4, "gpu_per_worker": 0.25, "other": -1})
    check_universal({"gpu_per_worker": 0})
    check_universal({"gpu_per_worker": 2})
    check_universal({})
