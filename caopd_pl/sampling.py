"""How an epoch's prompts and examples are drawn: a seeded sample of the train split, evenly over groups where asked
(``data.stratify_by``), and the seeded order the loader serves the epoch's examples in."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Sampler

from caopd_pl.tasks.base import TaskExample


class EpochPermutation(Sampler[int]):
    """The indices ``0..size-1`` in an order that is a pure function of ``seed``: the same at every ``iter()``.

    Lightning calls ``iter()`` on an epoch's loader a varying number of times (to check that it is iterable, and
    more often in the first epoch after a resume); a sampler drawing from one shared generator would serve each
    call a different order, so a resumed run would not replay the epoch it lost.

    Args:
        size: the number of examples.
        seed: seed of the permutation (the datamodule passes one derived from ``data.seed`` and the epoch).
        skip: numbers drawn from the seeded generator before the permutation. The datamodule skips what the
            shuffling loader it replaces drew in an uninterrupted run (one number per ``iter()``: Lightning 2.6
            iterated it once before epoch 0's batches, twice before later epochs'), so that the batches, and the
            results docs/ quotes, stay those of that loader.
        passes: the permutations served one after another (GRPO's passes over an epoch's rollouts), each drawn
            from the same generator after the previous; the first is the one a single pass serves.
    """

    def __init__(self, size: int, seed: int, skip: int = 0, passes: int = 1) -> None:
        self.size, self.seed, self.skip, self.passes = size, seed, skip, passes

    def __len__(self) -> int:
        return self.size * self.passes

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.skip):
            torch.empty((), dtype=torch.int64).random_(generator=generator)
        return iter([i for _ in range(self.passes) for i in torch.randperm(self.size, generator=generator).tolist()])


def strata(rows: list[TaskExample], key: str) -> dict[Any, list[int]]:
    """The indices of ``rows`` grouped by ``meta[key]``, the groups in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for index, example in enumerate(rows):
        groups.setdefault(example.meta[key], []).append(index)
    return groups


def stratum_shares(rng: random.Random, sizes: list[int], count: int) -> list[int]:
    """How many of ``count`` draws each group of ``sizes`` rows gives: as evenly as its size allows.

    Every group still open gets an equal share of what is left to draw, the remainder one more each for open groups
    drawn by ``rng``; a group with fewer rows than its share gives them all, and the shortfall is shared again among
    the others (at most one round per group).

    Raises:
        ValueError: ``count`` exceeds the rows of all groups.
    """
    if count > sum(sizes):
        raise ValueError(f"cannot draw {count} rows from groups of {sum(sizes)}")
    shares = [0] * len(sizes)
    while (left := count - sum(shares)) > 0:
        open_groups = [group for group, size in enumerate(sizes) if shares[group] < size]
        even, remainder = divmod(left, len(open_groups))
        lucky = set(rng.sample(open_groups, remainder))
        for group in open_groups:
            shares[group] = min(sizes[group], shares[group] + even + (group in lucky))
    return shares


def stratified_sample(rng: random.Random, groups: list[list[int]], count: int) -> list[int]:
    """``count`` indices drawn without replacement, evenly over ``groups`` (:func:`stratum_shares`), shuffled so
    that the groups interleave; every draw comes from ``rng``."""
    shares = stratum_shares(rng, [len(group) for group in groups], count)
    chosen = [index for group, share in zip(groups, shares) for index in rng.sample(group, share)]
    rng.shuffle(chosen)
    return chosen
