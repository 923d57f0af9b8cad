"""The student's weights for an engine that samples from its own copy: gathered one parameter at a time, and a
fingerprint that tells whether they changed since the last push. Nothing here depends on the engine.

Gathering (:func:`iter_full_parameters`) yields every parameter under its Hugging Face checkpoint name (wrapper
components that sharding, compiling and activation checkpointing insert are removed), tied ones under each of their
names, as full tensors: DTensor (FSDP2 / ``ModelParallelStrategy``) and DeepSpeed ZeRO-3 parameters are gathered one
at a time, FSDP1 flat parameters one FSDP unit at a time; peak extra memory is one parameter (one unit), never the
model. A model with LoRA adapters (:mod:`caopd_pl.models.lora`) yields the base's names, each adapted weight with the
student's adapter merged in, one weight at a time.

Change detection (:func:`fingerprint`, :func:`changed_on_any_rank`) reads only the local shards: parameter
identities and autograd version counters (every in-place update through autograd: optimizer steps, ``copy_``,
``load_state_dict``), and a float32 sum and norm of each shard (what version counters miss: fused optimizers, writes
through ``.data``). Ranks then agree, since under sharding one rank's shard may change while another's does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from caopd_pl.models.lora import has_adapters, iter_merged_parameters

# Wrapper path components that sharding / compiling / checkpointing insert into parameter names.
_WRAPPER_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


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
        named = ((checkpoint_name(name), _full_tensor(p)) for name, p in model.named_parameters(remove_duplicate=False))
        if has_adapters(model):  # LoRA: the engine gets the base with the student's adapter merged in
            named = iter_merged_parameters(named, model)
        yield from named


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
    """Parameters of an FSDP1 unit that no nested unit owns (tied duplicates included).

    Inside ``summon_full_params`` FSDP names parameters without its ``_fsdp_wrapped_module`` components, while
    ``named_modules`` keeps them: both are compared as checkpoint names.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    nested = [
        checkpoint_name(name)
        for name, module in unit.named_modules()
        if isinstance(module, FSDP) and module is not unit
    ]
    for name, param in unit.named_parameters(remove_duplicate=False):
        clean = checkpoint_name(name)
        if "flat_param" not in name and not any(clean.startswith(prefix + ".") for prefix in nested):
            yield name, param


# --------------------------------------------------------------------------------------------------------------
# Did the weights change since the last push?
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """A cheap summary of a model's local weights; two differ when the weights may have changed in between."""

    keys: tuple[tuple[str, int, int], ...]
    """``(name, id, version counter)`` of each parameter's local tensor."""
    sums: torch.Tensor
    """``(P, 2)`` float32 sum and norm of each local tensor, on the CPU."""

    def differs(self, other: Fingerprint | None) -> bool:
        """Whether ``other`` (None: nothing pushed yet) is not this fingerprint."""
        return other is None or self.keys != other.keys or not torch.equal(self.sums, other.sums)


def fingerprint(model: torch.nn.Module) -> Fingerprint:
    """The fingerprint of ``model``'s local weights: identities, version counters, and a content summary.

    One pass over the local shards; nothing is gathered.
    """
    params = [(name, getattr(p, "_local_tensor", p)) for name, p in model.named_parameters()]
    keys = tuple((name, id(p), p._version) for name, p in params)
    with torch.no_grad():
        sums = [
            torch.stack((p.sum(dtype=torch.float32), torch.linalg.vector_norm(p, dtype=torch.float32)))
            for _, p in params
        ]  # P x (2,)
    return Fingerprint(keys, torch.stack(sums).cpu())  # (P, 2)


def changed_on_any_rank(changed: bool, device: torch.device) -> bool:
    """Whether the weights changed on any rank (``changed``: on this one); without a process group, ``changed``.

    Under sharding one rank's shard may change while another's does not, and then every rank must take part in the
    push's gathers.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return changed
    if torch.distributed.get_backend() != "nccl":
        device = torch.device("cpu")
    flag = torch.tensor([int(changed)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())
