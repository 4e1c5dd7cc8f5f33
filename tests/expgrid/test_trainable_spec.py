"""The trainable spec: code given by reference is imported only when called, and what a spec
fills in itself (its ref, its data key)."""

from __future__ import annotations

import json
import pickle
import sys

import expgrid
from expgrid.trainable_spec import FunctionRef, TrainableSpec, data_key_of, import_ref, spec_of


def _local(config):
    return config


def test_code_by_reference_is_imported_when_called():
    sys.modules.pop("textwrap", None)  # a module of the standard library, to watch it load
    spec = TrainableSpec(name="t", fn="textwrap:dedent", check="textwrap:indent")
    assert "textwrap" not in sys.modules
    assert spec.ref == "textwrap:dedent" and isinstance(spec.check, FunctionRef)
    assert spec.check("a", "> ") == "> a" and "textwrap" in sys.modules
    assert spec.function() is sys.modules["textwrap"].dedent
    assert pickle.loads(pickle.dumps(spec)) == spec  # references travel as names


def test_a_function_given_directly_gets_its_module_as_ref():
    spec = TrainableSpec(name="t", fn=_local, metrics=["a", "b"])
    assert spec.ref == f"{__name__}:_local" and spec.metrics == ("a", "b") and spec.function() is _local
    assert import_ref(spec.ref) is _local


def test_a_data_key_without_data_is_dropped_and_the_config_keys_otherwise():
    assert TrainableSpec(name="t", fn=_local, data_key=lambda c: 1).data_key is None
    spec = TrainableSpec(name="t", fn=_local, load_data=lambda c: c)
    assert spec.takes_data and data_key_of(spec, {"b": 1, "a": [2]}) == json.dumps({"a": [2], "b": 1})
    keyed = TrainableSpec(name="t", fn=_local, load_data=lambda c: c, data_key=lambda c: c["dataset"])
    assert data_key_of(keyed, {"dataset": "d", "lr": 1}) == "d"


def test_the_decorator_and_spec_of_name_what_an_entry_point_loads():
    @expgrid.trainable(defaults={"lr": 0.1}, metrics=["acc"])
    def train(config):
        pass

    spec = spec_of(train, "mine")
    assert spec.name == "mine" and spec.defaults == {"lr": 0.1} and spec.metrics == ("acc",) and spec.fn is train
    assert spec_of(_local, "plain").defaults is None
    assert spec_of(TrainableSpec(name="x", fn=_local), "named").name == "named"
    assert spec_of(42, "n") is None
    assert TrainableSpec(name="t", fn=_local).catalogue_names() == {}
