"""Sharded training (FSDP2) of the student and its EMA teacher, with the chunked loss.

Under Lightning's ``ModelParallelStrategy`` (``tensor_parallel_size: 1``: every rank is a data-parallel rank that
holds 1/N of every weight), :func:`shard_model` applies torch's ``fully_shard`` to each decoder layer of a model and
then to the model itself, whose own group holds what no layer owns: the token embedding, the final norm and the
output embedding (``lm_head``). The student and the teacher are sharded the same way.

The chunked loss (:mod:`caopd_pl.losses`) reads the output embedding's weight directly, outside any ``forward`` of
the model, where FSDP would leave it a sharded ``DTensor``. Rather than gathering it by hand and reduce-scattering
its gradient ourselves, the loss runs *as a forward of the sharded model* (:func:`run_as_forward`: torch's
``register_fsdp_forward_method`` on a one-line trampoline): FSDP's pre-forward all-gathers the model's own group
(embedding, norm, ``lm_head``), each layer gathers itself as it runs, and the loss's backward ends in FSDP's
post-backward, which reduce-scatters ``lm_head``'s gradient into its shard like any other. The loss still walks the
vocabulary projection chunk by chunk: the gathered (V, H) weight exists, the (B, T, V) logits never do. The teacher
needs no gradient; its output embedding is gathered for the loss and released right after (:func:`gathered`).

The EMA update then runs on the local shards (teacher and student parameters are DTensors with the same placement;
``lerp`` on them is local, nothing is gathered). Rollouts with the ``hf`` engine call ``generate`` on the sharded
student: every generate step is a forward whose layers all-gather, so ranks must take the same number of steps;
the model is marked FSDP-managed, which makes ``generate`` keep stepping (``synced_gpus``) until every rank is
done. The vLLM sync gathers one parameter at a time (:func:`caopd_pl.rollout.weights.iter_full_parameters`).

Run (2 processes on one machine)::

    python -m caopd_pl fit --config configs/quickstart.yaml --trainer.devices 2 \\
        --trainer.strategy lightning.pytorch.strategies.ModelParallelStrategy \\
        --trainer.strategy.tensor_parallel_size 1 --trainer.strategy.save_distributed_checkpoint false
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

from caopd_pl.errors import UsageError

_T = TypeVar("_T")
_FORWARD = "caopd_sharded_call"
"""The trampoline method :func:`shard_model` registers as an FSDP forward of a sharded model."""


def data_parallel_mesh(mesh: DeviceMesh) -> DeviceMesh:
    """The 1-D data-parallel mesh that FSDP shards over, from ``ModelParallelStrategy``'s 2-D device mesh.

    Raises:
        UsageError: the mesh has a tensor-parallel dimension larger than 1 (not supported here).
    """
    if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
        raise UsageError(
            f"trainer.strategy.tensor_parallel_size={mesh['tensor_parallel'].size()}: caopd_pl shards with FSDP only; "
            "set trainer.strategy.tensor_parallel_size: 1 (every device then holds 1/N of each weight)"
        )
    return mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh


def shard_model(model: torch.nn.Module, mesh: DeviceMesh) -> None:
    """Shard ``model`` in place with FSDP2: each decoder layer is one group, the rest (embeddings, norm) the root's.

    A model already sharded is left as it is (Lightning calls ``configure_model`` again for ``test`` after
    ``fit``).

    Args:
        model: a Hugging Face causal LM; its decoder layers are the modules whose class is in ``_no_split_modules``.
        mesh: the 1-D data-parallel mesh (:func:`data_parallel_mesh`).

    Raises:
        ValueError: the model declares no decoder layer class, or none of its modules is one.
    """
    if isinstance(model, FSDPModule):
        return
    layer_classes = set(getattr(model, "_no_split_modules", None) or ())
    layers = [module for module in model.modules() if type(module).__name__ in layer_classes]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no decoder layer (_no_split_modules={sorted(layer_classes)})")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    # FSDP keeps a root's parameters gathered after its forward (for the backward that follows). Rollouts and
    # evaluation run forwards with no backward, after which the optimizer, the EMA, the weight sync and the
    # checkpoint must see shards: release them after every forward; the backward gathers them again.
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    setattr(model, _FORWARD, _call)
    register_fsdp_forward_method(model, _FORWARD)
    # transformers' generate() then keeps every rank stepping until all are done (synced_gpus): each step all-gathers.
    model._is_fsdp_managed_module = True


def _call(function: Callable[..., _T], *args: Any) -> _T:
    return function(*args)


def run_as_forward(model: torch.nn.Module, function: Callable[..., _T], *args: Any) -> _T:
    """``function(*args)``, run as a forward of ``model`` when it is sharded, so that FSDP gathers its own group.

    Inside, the model's root parameters (embedding, norm, output embedding) are whole; the gradients that flow
    into them are reduce-scattered into their shards by FSDP's post-backward. Unsharded, it is a plain call.
    """
    if isinstance(model, FSDPModule):
        return getattr(model, _FORWARD)(function, *args)
    return function(*args)


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """The root parameters of a sharded ``model`` are whole inside (no gradient may flow to them); else nothing."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model`."""
    return isinstance(model, FSDPModule)
