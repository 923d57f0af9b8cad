"""Reading a checkpoint file only when it is whole and its weights are numbers.

``torch.save`` writes a zip archive with a CRC-32 checksum per record, which ``torch.load`` never checks: a few bytes
changed on disk (a failing disk, a copy cut short and patched, a stray write) load without a word, and a tensor
overwritten with NaN trains, evaluates or exports as if nothing happened. :func:`read_checkpoint` checks every
record against its checksum, then every floating-point weight of the ``state_dict`` for NaN and infinity (a
diverged run saves those with valid checksums), and reports either in one line. ``export`` and every Lightning
command given ``--ckpt_path`` read checkpoints through it before anything is built.

The checksums are read in one sequential pass over the file (about as long as copying it), the weights memory-mapped.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from caopd_pl.errors import UsageError

FIX = "use another checkpoint (an earlier epoch=*.ckpt of the run) or copy it again"


def read_checkpoint(path: Path, option: str = "--ckpt_path", check: bool = True) -> dict[str, Any]:
    """The checkpoint at ``path``, memory-mapped, after :func:`check_archive` and :func:`check_weights`.

    Args:
        path: the ``.ckpt`` file.
        option: the option that named it, for the messages.
        check: run the checks (the processes of a multi-process run but the first of each machine read only).

    Raises:
        UsageError: not a file, not a torch archive, a record that fails its checksum, or non-finite weights.
    """
    if not path.is_file():
        raise UsageError(f"{option}={str(path)!r}: no such file; give a .ckpt file written by fit")
    if check:
        check_archive(path, option)
    try:
        # mmap: what is never read (the optimizer states, for export) stays on disk.
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # a foreign file: torch's errors vary by cause
        raise UsageError(f"{option}={str(path)!r} is not a readable checkpoint ({type(err).__name__})") from err
    if check and isinstance(checkpoint, dict):
        check_weights(checkpoint.get("state_dict", {}), path, option)
    return checkpoint


def check_archive(path: Path, option: str = "--ckpt_path") -> None:
    """Check every record of the zip archive ``torch.save`` wrote at ``path`` against its CRC-32.

    Raises:
        UsageError: not a zip archive (a truncated file loses its directory at the end), or a record whose content
            is not what was written (the message names the record).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise UsageError(
            f"{option}={str(path)!r} is not a whole checkpoint (not a torch archive: {err}); {FIX}"
        ) from err
    if bad is not None:
        raise UsageError(
            f"{option}={str(path)!r} is damaged: its record {bad} fails its CRC-32 check (the file changed after it "
            f"was written); {FIX}"
        )


def check_weights(state_dict: dict[str, Any], path: Path, option: str = "--ckpt_path") -> None:
    """Refuse a state dict holding NaN or infinity in a floating-point tensor.

    Raises:
        UsageError: some weights are not finite (the message counts the tensors and names the first).
    """
    bad = [name for name, value in state_dict.items() if _non_finite(value)]
    if bad:
        raise UsageError(
            f"{option}={str(path)!r}: {len(bad)} weight tensor(s) hold NaN or infinity (first: {bad[0]}); the run "
            f"diverged before this checkpoint, or the file was damaged; {FIX}"
        )


def _non_finite(value: Any) -> bool:
    if not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
        return False
    return not bool(torch.isfinite(value).all())
