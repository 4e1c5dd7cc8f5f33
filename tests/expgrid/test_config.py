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
