"""derive_seed gives the seeds the epochs and the reasoning-gym splits had before it existed, bit for bit."""

from __future__ import annotations

import hashlib

from caopd_pl.resume import epoch_seed
from caopd_pl.seeds import derive_seed
from caopd_pl.tasks.reasoning_gym import split_seed

SEEDS = (0, 1, 7, 2**40)


def reference(seed: int, stream: object, byteorder: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:4], byteorder)


def test_epoch_seeds_are_unchanged():
    for seed in SEEDS:
        assert [epoch_seed(seed, epoch) for epoch in range(50)] == [reference(seed, e, "little") for e in range(50)]


def test_split_seeds_are_unchanged_and_leave_room_for_an_index():
    for seed in SEEDS:
        for split in ("train", "val", "test", "ood"):
            assert split_seed(seed, split) == reference(seed, split, "big") % 2**31 < 2**31


def test_streams_get_distinct_seeds_within_numpys_range():
    seeds = {derive_seed(seed, stream) for seed in SEEDS for stream in [*range(100), "train", "val"]}
    assert len(seeds) == len(SEEDS) * 102 and max(seeds) < 2**32
