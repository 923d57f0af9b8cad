"""``--help`` of the Lightning commands without importing Lightning, after the first time.

The help of ``fit`` lists every option of the trainer, the module and the data module: building it imports torch,
Lightning and transformers (seconds). It changes only when the package's source, the
versions of the libraries that shape it, or the terminal width change, so the first call writes it to
``$XDG_CACHE_HOME/caopd_pl/help/`` (default ``~/.cache``) under a digest of all of these, and later calls print it.
An unwritable cache only costs the time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_LIBRARIES = ("torch", "lightning", "jsonargparse", "transformers", "docstring_parser")


def cache_dir() -> Path:
    """Where help texts are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "caopd_pl" / "help"


def help_key(command: str) -> str:
    """Digest of everything the help text of ``command`` depends on."""
    digest = hashlib.sha256(f"{command}\n{shutil.get_terminal_size().columns}\n{sys.version}\n".encode())
    for library in _LIBRARIES:
        try:
            digest.update(f"{library}=={metadata.version(library)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{library} absent\n".encode())
    for source in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(source.relative_to(PACKAGE_DIR)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:32]


def cached_help(command: str) -> str:
    """The help text of ``command``: from the cache, or built (:func:`caopd_pl.cli.help_text`, which imports
    Lightning) and kept."""
    path = cache_dir() / f"{command}-{help_key(command)}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    from caopd_pl.cli import help_text

    text = help_text(command)
    if text.strip():
        _write(path, text)
    return text


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)  # atomic: a concurrent call reads the old text or the new, never half
    except OSError:
        pass  # an unwritable cache only costs the time
