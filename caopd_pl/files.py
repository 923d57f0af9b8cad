"""Files the project writes and reads: crash-safe writes, and one JSONL reader and writer.

Every write here goes to a temporary file in the target's own folder, is fsynced and renamed over the target, and
the folder is fsynced after: a killed or crashed process leaves the old file or the new one, never half of one, and
the new name survives a power loss. (A temporary file in the system's temporary folder would make the rename a copy
whenever that is another filesystem, and a copy cut short is a torn file.)

JSONL records may hold NumPy/torch scalars and arrays (references read through ``datasets``) and sets: they are
written as JSON numbers and lists, which the verifiers read back as the same values.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` with what ``write`` writes to a binary file handle, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=json_value) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, atomically (checkpoints, saved teachers)."""
    import torch  # the JSON helpers stay importable without torch

    atomic_write(path, lambda file: torch.save(obj, file))


def atomic_save_dir(path: Path, save: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder beside ``path`` with ``save(folder)`` and rename it to ``path``.

    An existing ``path`` is replaced; a failure in ``save`` leaves it as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save(temporary)
        # mkdtemp and atomic file writes create private modes (0700/0600): give the result the modes a plain
        # mkdir/open would have under the process's umask, so other users can read an export or a pulled model.
        _apply_umask(temporary)
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _apply_umask(folder: Path) -> None:
    umask = _umask()
    folder.chmod(0o777 & ~umask)
    for item in folder.rglob("*"):
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``records`` one JSON object per line, atomically.

    Raises:
        TypeError: a record holds a value JSON cannot represent (the message names its type); ``path`` is untouched.
    """
    lines = "".join(json.dumps(record, default=json_value) + "\n" for record in records)
    atomic_write_text(path, lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; blank lines are skipped.

    Raises:
        ValueError: a line is not a JSON object (the message names the file and the line number).
    """
    with Path(path).open(encoding="utf-8") as handle:
        return [json_object(line, f"{path}:{number}") for number, line in enumerate(handle, start=1) if line.strip()]


def json_object(line: str, where: str) -> dict[str, Any]:
    """The JSON object on one line.

    Raises:
        ValueError: the line is not JSON, or not an object (the message starts with ``where``, e.g. ``file:line``).
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from err
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def json_value(value: Any) -> Any:
    """``json.dumps``'s ``default``: NumPy/torch scalars and arrays as numbers and lists, sets as sorted lists.

    Raises:
        TypeError: anything else JSON cannot represent (the message names its type and value).
    """
    if hasattr(value, "tolist"):  # NumPy / torch scalars and arrays
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"a record holds {type(value).__name__!r}, which JSON cannot represent: {value!r}")


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems cannot fsync a folder; the rename itself is still atomic
        pass
    finally:
        os.close(descriptor)
