import pytest

from expgrid.errors import UnknownNameError
from expgrid.registry import Registry
from trainables.registry import list_trainables, resolve_trainable


def test_registry_rejects_duplicates_and_suggests_close_names():
    reg: Registry[int] = Registry("widget")
    reg.register("resnet18", 1)
    reg.register("resnet50", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("resnet18", 3)
    with pytest.raises(UnknownNameError) as info:
        reg.get("resnet5")
    assert "did you mean resnet50" in str(info.value) and "one of resnet18, resnet50" in str(info.value)
    assert reg.names("resnet5*") == ["resnet50"]


def test_builtin_trainables_are_listed_and_resolve():
    assert {"classify", "toy"} <= set(list_trainables())
    spec = resolve_trainable("toy")
    assert spec.ref == "trainables.toy:toy" and "score" in spec.metrics
    with pytest.raises(UnknownNameError, match="did you mean classify"):
        resolve_trainable("clasify")
