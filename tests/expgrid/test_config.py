import pytest

from expgrid.config import expand_names, flatten, merge, nest, unknown_paths
from expgrid.errors import ConfigError


def test_dotted_and_nested_keys_are_the_same():
    assert nest({"optimizer.lr": 0.1, "optimizer": {"name": "adam"}}) == {"optimizer": {"lr": 0.1, "name": "adam"}}
    assert flatten({"optimizer": {"lr": 0.1, "name": "adam"}, "hidden": [1, 2]}) == {
        "optimizer.lr": 0.1,
        "optimizer.name": "adam",
        "hidden": [1, 2],
    }


def test_the_same_key_twice_is_refused():
    with pytest.raises(ConfigError, match="optimizer.lr: expected each key given once"):
        nest({"optimizer.lr": 0.1, "optimizer": {"lr": 0.2}})


def test_merge_lays_mappings_over_each_other_without_touching_inputs():
    base = {"optimizer": {"name": "adam", "lr": 1.0}, "epochs": 3}
    out = merge(base, {"optimizer": {"lr": 0.5}})
    assert out == {"optimizer": {"name": "adam", "lr": 0.5}, "epochs": 3}
    assert base["optimizer"]["lr"] == 1.0


def test_a_name_stands_for_a_mapping_with_that_name():
    schema = {"model": {"name": "mlp", "hidden": [8]}, "epochs": 1}
    assert expand_names({"model": "resnet18", "epochs": 2}, schema) == {"model": {"name": "resnet18"}, "epochs": 2}


def test_unknown_paths_names_each_unknown_key():
    schema = {"model": {"name": "mlp"}, "extra": {}}
    assert unknown_paths({"model": {"name": "x", "depth": 3}, "extra": {"anything": 1}, "lr": 1}, schema) == [
        "model.depth",
        "lr",
    ]


@pytest.mark.parametrize(
    "value,ok",
    [(0, True), (-1.5, True), (2**63 - 1, True), (-(2**63), True), (2**63, False), (float("nan"), False),
     (float("inf"), False), (-float("inf"), False), (True, False), ("1", False), (None, False)],
)  # fmt: skip
def test_finite_number_is_what_a_setting_may_be(value, ok):
    from expgrid.config import finite_number

    assert finite_number(value) is ok


def test_check_values_names_the_path_of_the_first_bad_value():
    from expgrid.config import MAX_DEPTH, check_values

    check_values({"a": [1, 2.5, {"b": None}], "c": True})  # fine: nothing raised
    with pytest.raises(ConfigError, match=r"^sections\[0\]\.grid\.x\[1\]: expected a finite number, got nan$"):
        check_values({"sections": [{"grid": {"x": [0, float("nan")]}}]})
    with pytest.raises(ConfigError, match=r"^seed: expected an integer within 64 bits"):
        check_values({"seed": 10**30})
    deep: list = []
    node = deep
    for _ in range(MAX_DEPTH + 1):
        node.append([])
        node = node[0]
    with pytest.raises(ConfigError, match=f"expected at most {MAX_DEPTH} levels of nesting"):
        check_values({"d": deep})
    looped: list = []
    looped.append(looped)  # what `&a [*a]` loads as
    with pytest.raises(ConfigError, match=r"^d\[0\]: expected a value that does not contain itself"):
        check_values({"d": looped})


def test_shared_values_count_each_time_they_are_used():
    """YAML aliases share one object; following them is what nest/flatten/JSON would do."""
    from expgrid.config import MAX_VALUES, check_values

    leaf = list(range(100))
    tree = [[leaf] * 100] * (MAX_VALUES // 10_000 + 1)  # ~1 000 000 uses of 100 values
    with pytest.raises(ConfigError, match=f"expected at most {MAX_VALUES} values in all"):
        check_values(tree)
    check_values([[leaf] * 100] * 10)  # 100 000: fine
