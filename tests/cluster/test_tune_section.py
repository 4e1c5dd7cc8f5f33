"""How a section is cut into Tune trials (packs); no Ray started."""

from cluster import tune_section


def test_small_fifo_sections_are_not_packed_and_large_ones_keep_four_packs_per_slot():
    assert tune_section.trials_per_pack(5, 2, packable=True) == 1
    assert tune_section.trials_per_pack(100, 2, packable=True) == 12  # 9 packs: 4+ per slot
    assert tune_section.trials_per_pack(100, 2, packable=False) == 1  # ASHA / best-epoch sections
