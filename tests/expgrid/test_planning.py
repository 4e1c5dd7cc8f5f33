from expgrid.planning import carried_values, plan_section, sweep_points
from expgrid.study import parse_study
from trainables.registry import resolve_trainable

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
