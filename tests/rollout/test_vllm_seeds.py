"""The vLLM engine's request seeds: the caller's seed and the prompt's place in the caller's list, nothing else.

Issue 21, item 8: every rank of a multi-process run evaluates every prompt, but the engine mixed the rank into
every request's seed, so the ranks' sampled readouts differed and the metrics logged from all ranks disagreed with
the ``metrics.json`` rank 0 writes. Training seeds differ by rank because the caller puts the rank in them.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="the request seeds are vLLM SamplingParams")

from caopd_pl.rollout.base import RolloutConfig  # noqa: E402
from caopd_pl.rollout.vllm import VLLMEngine, _DistributedLayout  # noqa: E402


def _seeds(layout: _DistributedLayout, seed: int, prompts: int) -> list[int]:
    engine = object.__new__(VLLMEngine)  # the seed arithmetic only: no model, no engine process
    engine._layout, engine.stop_ids = layout, [0]
    sampling = RolloutConfig(num_samples=4, temperature=1.0)
    return [engine._sampling_params(sampling, seed, index).seed for index in range(prompts)]


def test_ranks_evaluating_the_same_batch_request_the_same_seeds():
    ranks = [
        _DistributedLayout(world_size=4, rank=r, tp=1, tp_group=None, trainer_owns_process_group=True) for r in range(4)
    ]
    evaluation = {tuple(_seeds(layout, seed=1_000_003 + 7, prompts=5)) for layout in ranks}
    assert len(evaluation) == 1  # the sampled readout is the same completions on every rank


def test_training_epochs_and_ranks_draw_disjoint_seeds():
    layout = _DistributedLayout(world_size=1, rank=0, tp=1, tp_group=None, trainer_owns_process_group=False)
    base = 0
    drawn = [
        seed + child
        for epoch in range(3)
        for rank in range(4)
        for seed in _seeds(layout, base + 10_007 * epoch + 101 * rank, prompts=64)  # the datamodule's seed
        for child in range(4)
    ]
    assert len(drawn) == len(set(drawn))


def _pool_on_rank(rank: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        layout = _DistributedLayout(
            world_size=2, rank=rank, tp=2, tp_group=dist.group.WORLD, trainer_owns_process_group=True
        )
        prompts = [[rank, i] for i in range(rank + 1)]  # rank 0: one prompt, rank 1: two
        out[rank] = layout.pool(prompts, seed=100 + rank)
    finally:
        dist.destroy_process_group()


def test_a_tensor_parallel_group_pools_prompts_with_their_owners_seeds():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_pool_on_rank, args=(port, out), nprocs=2)
        results = dict(out)
    pooled = [[0, 0], [1, 0], [1, 1]]
    seeds = [(100, 0), (101, 0), (101, 1)]  # each prompt keeps its owner's seed and index: pooled or not, the same
    assert results[0] == (pooled, seeds, slice(0, 1))
    assert results[1] == (pooled, seeds, slice(1, 3))
