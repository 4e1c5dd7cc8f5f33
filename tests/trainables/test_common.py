"""The trainers' shared helpers (trainables/common.py)."""

from __future__ import annotations

import pytest
import torch

from trainables.common import dataset_key, to_cpu, torch_threads


def test_to_cpu_copies_every_tensor_in_nested_state():
    live = torch.ones(3, requires_grad=True)
    state = {"w": live, "groups": [{"lr": 0.1, "params": [0]}], "pair": (torch.zeros(2), "x")}
    copied = to_cpu(state)
    with torch.no_grad():
        live.add_(1)
    state["groups"][0]["lr"] = 0.5
    assert torch.equal(copied["w"], torch.ones(3)) and not copied["w"].requires_grad
    assert copied["groups"] == [{"lr": 0.1, "params": [0]}]  # not the live list either
    assert isinstance(copied["pair"], tuple) and copied["pair"][1] == "x"
    assert copied["pair"][0].data_ptr() != state["pair"][0].data_ptr()


def test_torch_threads_sets_and_restores_and_zero_leaves_them():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_dataset_key_depends_on_the_dataset_mapping_only():
    a = {"dataset": {"name": "digits", "train_size": 10}, "epochs": 1}
    b = {"dataset": {"train_size": 10, "name": "digits"}, "epochs": 5}
    assert dataset_key(a) == dataset_key(b)
    assert dataset_key(a) != dataset_key({"dataset": {"name": "digits", "train_size": 11}})
