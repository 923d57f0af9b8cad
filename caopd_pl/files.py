"""Files the project writes and reads: crash-safe writes, and one JSONL reader and writer.

Every write here goes to a temporary file in the target's own folder, is fsynced and renamed over the target, and
the folder is fsynced after: a killed or crashed process leaves the old file or the new one, never half of one, and
the new name survives a power loss. (A temporary file in the system's temporary folder would make the rename a copy
whenever that is another filesystem, and a copy cut short is a torn file.) A write that finds the disk full raises
:class:`caopd_pl.errors.DiskFull` (one line naming the filesystem) and leaves the target as it was;
:func:`atomic_write_files` writes several files as a whole (a report's numbers and figure) or none of them.

JSONL records may hold NumPy/torch scalars and arrays (references read through ``datasets``) and sets: they are
written as JSON numbers and lists, which the verifiers read back as the same values.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from caopd_pl.errors import DiskFull, is_disk_full

Writer = Callable[[IO[bytes]], None]
"""Writes a file's content to a binary file handle."""


def atomic_write(path: Path, write: Writer) -> None:
    """Create or replace ``path`` with what ``write`` writes to a binary file handle, atomically.

    Raises:
        DiskFull: no space or quota left; ``path`` is as it was.
    """
    atomic_write_files({Path(path): write})


def atomic_write_files(writes: Mapping[Path, Writer]) -> None:
    """Create or replace every path of ``writes`` with what its writer writes: all of them, or (on any failure before
    the renames) none. Each file is written to a temporary file beside it and fsynced before the first rename.

    Raises:
        DiskFull: no space or quota left; every path is as it was.
    """
    temporaries: dict[Path, str] = {}
    try:
        for path, write in writes.items():
            temporaries[path] = _written_temporary(Path(path), write)
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    except BaseException as err:
        for temporary in temporaries.values():
            with contextlib.suppress(FileNotFoundError):
                os.remove(temporary)
        if is_disk_full(err) and not isinstance(err, DiskFull):
            raise DiskFull(err, next(iter(writes))) from err  # a rename needing a folder block
        raise
    for folder in {Path(path).parent for path in writes}:
        _fsync_folder(folder)


def _written_temporary(path: Path, write: Writer) -> str:
    """A temporary file beside ``path`` holding what ``write`` writes, fsynced, with the modes of a plain write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        if is_disk_full(err):
            raise DiskFull(err, path) from err
        raise
    return temporary


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=json_value) + "\n")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save(obj, path)``, atomically (checkpoints, saved teachers).

    Raises:
        DiskFull: no space or quota left (torch reports a failed write as a ``RuntimeError`` of its own: the
            file's error is kept and raised instead); ``path`` is as it was.
    """
    import torch  # the JSON helpers stay importable without torch

    def save(file: IO[bytes]) -> None:
        recorder = _WriteErrors(file)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            if recorder.error is not None:
                raise recorder.error from None
            raise

    atomic_write(path, save)


class _WriteErrors:
    """A binary file that keeps the ``OSError`` its last failed write raised."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def atomic_save_dir(path: Path, save: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder beside ``path`` with ``save(folder)`` and rename it to ``path``.

    An existing ``path`` is replaced; a failure in ``save`` leaves it as it was.

    Raises:
        DiskFull: no space or quota left while saving; ``path`` is as it was.
    """
    path = Path(path)
    temporary = _saved_folder(path, save)
    try:
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    _fsync_folder(path.parent)


def save_into_dir(path: Path, save: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder beside ``path`` with ``save(folder)``, then move each file it holds into
    ``path`` (created), replacing files of the same names and keeping the others.

    Every file arrives whole, with the modes of a plain write; a failure in ``save`` leaves ``path`` as it was.

    Raises:
        DiskFull: no space or quota left while saving; ``path`` is as it was.
    """
    path = Path(path)
    temporary = _saved_folder(path, save)
    try:
        for item in sorted(temporary.rglob("*"), key=lambda item: len(item.parts)):
            target = path / item.relative_to(temporary)
            if item.is_dir():
                target.mkdir(mode=0o777 & ~_umask(), parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    _fsync_folder(path)


def _saved_folder(path: Path, save: Callable[[Path], None]) -> Path:
    """A temporary folder beside ``path`` that ``save`` filled, with the modes a plain mkdir/open would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save(temporary)
        # mkdtemp, atomic file writes and some libraries' writers (safetensors) create private modes (0700/0600):
        # give the result the modes of a plain mkdir/open under the process's umask, so other users can read it.
        _apply_umask(temporary)
    except BaseException as err:
        shutil.rmtree(temporary, ignore_errors=True)
        if is_disk_full(err) and not isinstance(err, DiskFull):
            raise DiskFull(err, path) from err
        raise
    return temporary


def _umask() -> int:
    # Linux states it in /proc: reading it there does not set it, which would race with threads creating files.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
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


def json_line(record: dict[str, Any]) -> bytes:
    """``record`` as one UTF-8 JSON line (``\\n``-terminated), non-ASCII text written as is.

    A string holding a lone surrogate (half of an emoji cut off in a JSON ``\\ud83d`` escape) cannot be UTF-8: such a
    record is written with ASCII escapes instead, which JSON reads back as the same string.

    Raises:
        TypeError: a value JSON cannot represent (the message names its type).
    """
    try:
        return (json.dumps(record, ensure_ascii=False, default=json_value) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, default=json_value) + "\n").encode("ascii")


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
