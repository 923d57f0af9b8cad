"""The starting model's weights, kept once per run, so that ``test`` can compare any checkpoint with its start.

``fit`` evaluates the model it starts from (after the warm start) on the validation prompts and compares it with the
last validation (:mod:`caopd_pl.comparison`). To do the same for a checkpoint on the test prompts, ``test`` needs
the start's weights, which no checkpoint holds: when training starts, ``fit`` writes them to ``start.safetensors``
in the checkpoint folder (:func:`save`), and every checkpoint records the file's name and SHA-256.

Only what training changes is kept: the student's trainable parameters, which is the whole model under full
fine-tuning (its size once per run, against the checkpoints' student, teacher and optimizer states every epoch) and
the student adapter alone under LoRA (the frozen base is in every checkpoint). A resumed ``fit`` never writes the
student: the file stays the one its first start wrote (copied, when the resume writes its checkpoints elsewhere).
The digest ties a checkpoint to its own run's file, so ``test`` (:func:`load`) never compares with another run's
start left in the same folder; where none fits (a checkpoint from before this file, a run that kept none) it says why
in one line and the checkpoint is tested alone. Not under FSDP2 sharding: its runs keep no start.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import safetensors.torch
import torch

from caopd_pl.files import atomic_write_files

FILE = "start.safetensors"
"""The file's name, in each checkpoint folder."""


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s trainable parameters by name, on the CPU (tied parameters once)."""
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def trainable_names(model: torch.nn.Module) -> set[str]:
    """The names of ``model``'s trainable parameters (the keys of :func:`trainable_weights`)."""
    return {name for name, p in model.named_parameters() if p.requires_grad}


def save(model: torch.nn.Module, folders: Sequence[Path]) -> dict[str, str]:
    """Write ``model``'s trainable weights to ``start.safetensors`` in each of ``folders``, atomically.

    Returns:
        What a checkpoint records of the file: ``{"file": "start.safetensors", "sha256": <hex digest>}``.
    """
    data = safetensors.torch.save(trainable_weights(model))
    atomic_write_files({Path(folder) / FILE: lambda file: file.write(data) for folder in folders})
    return {"file": FILE, "sha256": hashlib.sha256(data).hexdigest()}


def carry(record: Mapping[str, str], checkpoint: Path, folders: Sequence[Path]) -> None:
    """Copy the start kept beside ``checkpoint`` into each of ``folders`` that lacks it (a resume that writes its
    checkpoints elsewhere: ``trainer.default_root_dir`` may change); nothing when it is not there or not the one
    ``record`` names."""
    source = checkpoint.parent / record["file"]
    targets = [Path(folder) / record["file"] for folder in folders if Path(folder).resolve() != source.parent.resolve()]
    targets = [target for target in targets if not _holds(target, record)]
    if targets and _holds(source, record):
        data = source.read_bytes()
        atomic_write_files({target: lambda file: file.write(data) for target in targets})


def _holds(path: Path, record: Mapping[str, str]) -> bool:
    return path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]


def load(
    checkpoint: Path, record: Mapping[str, str] | None, model: torch.nn.Module
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The starting weights of the checkpoint at ``checkpoint``, read from its folder, for ``model``.

    Args:
        checkpoint: the checkpoint file; the start is looked for beside it.
        record: what the checkpoint recorded of its start (:func:`save`'s return); None when it recorded none.
        model: the model the weights are for; their names must be its trainable parameters'.

    Returns:
        ``(weights, "")``, or ``(None, why)``: one line saying why there is no start to compare with.
    """
    alone = "testing the checkpoint alone"
    if record is None:
        kept_none = "written before fit kept them, or by a fit with model.test_start: false or FSDP2 sharding"
        return None, f"{checkpoint.name} records no starting weights ({kept_none}); {alone}"
    path = checkpoint.parent / record["file"]
    if not path.is_file():
        return None, f"no {record['file']} beside {checkpoint} (the run's starting weights); {alone}"
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None, f"{path} is not the start of {checkpoint.name} (another run's, or changed since); {alone}"
    weights = safetensors.torch.load(data)
    if weights.keys() != trainable_names(model):
        return None, f"{path} does not hold this model's trainable weights; {alone}"
    return weights, ""


@contextlib.contextmanager
def swapped_in(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """``model`` holding ``weights`` (some of its parameters, by name) inside the block, its own again after.

    Its own are copied to the CPU meanwhile.
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        own = {name: params[name].detach().to("cpu", copy=True) for name in weights}
        _copy_into(params, weights)
    try:
        yield
    finally:
        with torch.no_grad():
            _copy_into(params, own)


def _copy_into(params: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]) -> None:
    for name, value in values.items():
        params[name].copy_(value)
