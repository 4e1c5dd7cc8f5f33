"""Admitting a section to the cluster: refused with the numbers when a trial (or a worker of a
data-parallel trial) cannot fit, and data-parallel trials capped at what the cluster holds."""

from __future__ import annotations

import pytest

from expgrid.admission import admitted_at_once, check_fits, concurrent_slots
from expgrid.errors import StudyFailed
from expgrid.study_types import Section

SECTION = Section(id="3.1", name="LR")
NODES = [{"cpu": 4.0, "gpu": 0.0}, {"cpu": 8.0, "gpu": 1.0}]
TOTAL = {"cpu": 12.0, "gpu": 1.0}


def test_a_trial_that_fits_on_some_node_is_admitted():
    check_fits(SECTION, {"cpu": 8.0, "gpu": 1.0}, NODES, TOTAL)  # only the second node holds it
    check_fits(SECTION, {"cpu": 4.0, "gpu": 0.5}, NODES, TOTAL, workers=2)


def test_a_trial_larger_than_every_node_is_refused_with_the_numbers():
    with pytest.raises(StudyFailed) as info:
        check_fits(SECTION, {"cpu": 9.0, "gpu": 0.0}, NODES, TOTAL)
    assert str(info.value) == (
        "section 3.1: one trial asks for 9 CPU and 0 GPU, but no node of this Ray cluster has that much (largest "
        "node: 8 CPU, 1 GPU; cluster total: 12 CPU, 1 GPU). Lower `resources` or add nodes.")  # fmt: skip
    with pytest.raises(StudyFailed, match="one worker process asks for 2 CPU and 2 GPU"):
        check_fits(SECTION, {"cpu": 2.0, "gpu": 2.0}, NODES, TOTAL, workers=2)


def test_a_data_parallel_trial_needing_more_than_the_cluster_is_refused():
    with pytest.raises(StudyFailed) as info:
        check_fits(SECTION, {"cpu": 4.0, "gpu": 0.0}, NODES, TOTAL, workers=4)
    assert "a data-parallel trial of 4 workers at 4 CPU and 0 GPU each needs 16 CPU and 0 GPU" in str(info.value)
    assert "this Ray cluster has 12 CPU and 1 GPU. Lower `workers`" in str(info.value)


def test_data_parallel_trials_are_capped_at_what_the_cluster_holds():
    available = {"cpu": 8.0, "gpu": 0.0}
    assert admitted_at_once(None, {"cpu": 1.0, "gpu": 0.0}, available, workers=1) is None  # Tune's own limit
    assert admitted_at_once(5, {"cpu": 1.0, "gpu": 0.0}, available, workers=1) == 5
    assert admitted_at_once(None, {"cpu": 1.0, "gpu": 0.0}, available, workers=3) == 2  # 3 CPUs a trial
    assert admitted_at_once(1, {"cpu": 1.0, "gpu": 0.0}, available, workers=3) == 1
    assert admitted_at_once(None, {"cpu": 6.0, "gpu": 0.0}, available, workers=2) == 1  # never 0


def test_concurrent_slots_count_the_scarcest_resource():
    assert concurrent_slots({"cpu": 1.0, "gpu": 0.25}, {"cpu": 8.0, "gpu": 1.0}, None) == 4
    assert concurrent_slots({"cpu": 1.0, "gpu": 0.0}, {"cpu": 8.0, "gpu": 0.0}, 3) == 3
    assert concurrent_slots({"cpu": 0.3, "gpu": 0.0}, {"cpu": 0.9, "gpu": 0.0}, None) == 3  # not 2 (rounding)
