"""Crash-safe files of a continual run: atomic writes and the state file of finished stages.

Every results file is written to a temporary file in its own directory and moved into place with ``os.replace``,
so a killed runner leaves either the old file or the new one, never half of one. A saved model is written to a
temporary directory and renamed the same way.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, fsync, ``os.replace``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def atomic_save_dir(path: Path, save: Callable[[Path], None]) -> None:
    """Fill a fresh temporary directory with ``save(tmp)`` and rename it to ``path`` (replacing an old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        save(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` to ``path`` atomically."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def atomic_write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in records))


class RunState:
    """The state file of one sequence: which stages are finished (trained and evaluated), and the config hash.

    Args:
        path: the JSON state file.
        fingerprint: hash of the configuration; a state written under another hash is refused.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.finished: list[str] = []
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{path} was written by a different configuration (fingerprint {saved.get('fingerprint')} != "
                    f"{fingerprint}); use another --out or delete the directory"
                )
            self.finished = list(saved.get("finished", []))

    def is_finished(self, stage: str) -> bool:
        return stage in self.finished

    def mark_finished(self, stage: str) -> None:
        """Record ``stage`` as finished (atomically)."""
        if stage not in self.finished:
            self.finished.append(stage)
        atomic_write_json(self.path, {"fingerprint": self.fingerprint, "finished": self.finished})
