"""How a section is cut into Tune trials (packs); no Ray started."""

from cluster import tune_section


def test_small_fifo_sections_are_not_packed_and_large_ones_keep_four_packs_per_slot():
    slots = tune_section.concurrent_slots({"cpu": 1.0, "gpu": 0.0}, {"cpu": 2.0, "gpu": 0.0}, None)
    assert slots == 2
    assert tune_section.trials_per_pack(5, slots, packable=True) == 1
    assert tune_section.trials_per_pack(100, slots, packable=True) == 12  # 9 packs: 4+ per slot
    assert tune_section.trials_per_pack(100, slots, packable=False) == 1  # ASHA / best-epoch sections
    assert tune_section.concurrent_slots({"cpu": 1.0, "gpu": 0.25}, {"cpu": 8.0, "gpu": 1.0}, None) == 4
    assert tune_section.concurrent_slots({"cpu": 1.0, "gpu": 0.0}, {"cpu": 8.0, "gpu": 0.0}, 3) == 3
