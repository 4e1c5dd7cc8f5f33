"""The name → object registry every pluggable kind of thing uses (datasets, models, optimizers)."""

import pytest

from expgrid.errors import UnknownNameError
from expgrid.registry import Registry


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
