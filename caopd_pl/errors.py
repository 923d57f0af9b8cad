"""The project's error types for what the user can fix: one line each, and an exit status of its own.

A :class:`UsageError` (bad input: a config value, a path, an option) is printed as one line by ``python -m caopd_pl``,
which exits with status 2. A :class:`DiskFull` (a write that found no space or quota left) is printed as one line
naming the filesystem, with status 3. Anything else that escapes a command is a bug and keeps its traceback.
``CAOPD_PL_TRACEBACK=1`` shows the traceback of a one-line error too (to debug the check itself).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

TRACEBACK_ENV = "CAOPD_PL_TRACEBACK"
USAGE_STATUS = 2
DISK_FULL_STATUS = 3
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""The ``errno`` values of a write that found the filesystem (or the user's quota) full."""


class UsageError(ValueError):
    """Bad input the user can fix: a config value, a path, an option; the message is one line naming all three.

    A ``ValueError`` so that code validating its arguments (and tests expecting ``ValueError``) need not know the
    command line exists.
    """


class DiskFull(OSError):
    """A write failed for lack of space (``ENOSPC``) or quota (``EDQUOT``); the message names the file and its
    filesystem. An ``OSError`` (with the original ``errno``), so code that handles write failures still sees one.

    Args:
        err: the write's error.
        path: the file being written; None when unknown (a library's write: the current folder's filesystem).
        done: what was kept, said after the filesystem (e.g. ``"120 judged lines written"``); empty for nothing.
    """

    def __init__(self, err: OSError, path: str | os.PathLike[str] | None, done: str = "") -> None:
        reason = "quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
        where = f" writing {str(path)!r}" if path is not None else ""
        kept = f"; {done}" if done else ""
        message = f"{reason}{where} ({filesystem(Path(path or '.'))}){kept}; free space there or write elsewhere"
        super().__init__(err.errno, message, None if path is None else str(path))

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` is a write that found no space or quota left."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def filesystem(path: Path) -> str:
    """``path``'s filesystem in words: its device, mount point and free space, e.g. ``tmpfs at /mnt/x, 0 B free``."""
    path = Path(os.path.abspath(path))
    mount = path
    while not mount.exists() or not os.path.ismount(mount):
        if mount.parent == mount:
            break
        mount = mount.parent
    device = _mounted_devices().get(str(mount), "the filesystem")
    try:
        free = f", {_size(shutil.disk_usage(mount).free)} free"
    except OSError:
        free = ""
    return f"{device} at {mount}{free}"


def _mounted_devices() -> dict[str, str]:
    # mount point -> device (Linux); the last mount of a point wins, as it hides the earlier ones.
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return {}
    fields = [line.split() for line in lines]
    return {f[1].replace("\\040", " "): f[0] for f in fields if len(f) >= 2}


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GB"


def one_line(message: str) -> str:
    """``message`` with its lines joined by ``"; "`` (argument parsers report nested failures over several lines)."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def one_line_report(err: BaseException) -> tuple[int, str] | None:
    """The exit status and the one line that report ``err``, when the user can fix it; None for a bug.

    A :class:`UsageError` exits with 2; a write that found no space or quota left (:class:`DiskFull`, or a library's
    ``OSError`` with ``ENOSPC``/``EDQUOT``, said as a ``DiskFull`` would say it) with 3. Anything else keeps its
    traceback, and so does everything under ``CAOPD_PL_TRACEBACK=1``.
    """
    if show_tracebacks():
        return None
    if isinstance(err, UsageError):
        return USAGE_STATUS, one_line(str(err))
    if isinstance(err, OSError) and is_disk_full(err):
        return DISK_FULL_STATUS, one_line(str(err if isinstance(err, DiskFull) else DiskFull(err, err.filename)))
    return None


def show_tracebacks() -> bool:
    """Whether the user asked for tracebacks of usage errors (``CAOPD_PL_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0", "false", "False")
