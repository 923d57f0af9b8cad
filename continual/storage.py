"""The state files of a continual run: which parts are finished, under which configuration.

Every file of a run is written atomically (:mod:`caopd_pl.files`), so a killed runner leaves either the old file or
the new one; a state file is what tells a rerun which parts it may skip. One guards the shared warm start
(``OUT/base/state.json``), one each calibration's sequence (``OUT/<calibration>/state.json``); each holds the
configuration's fingerprint and settings, and a rerun under another configuration is refused in one line naming the
first setting that differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caopd_pl.errors import UsageError
from caopd_pl.files import atomic_write_json
from caopd_pl.resume import changed_settings


class RunState:
    """A state file: which parts are finished, and the configuration they were made under.

    Args:
        path: the JSON state file.
        fingerprint: hash of the configuration; a state written under another hash is refused.
        settings: the configuration's settings (what was hashed), kept to name what changed.

    Raises:
        UsageError: ``path`` was written under another fingerprint (the message names the first setting that
            differs, when the file holds its settings).
    """

    def __init__(self, path: Path, fingerprint: str, settings: dict[str, Any] | None = None) -> None:
        self.path, self.fingerprint, self.settings = path, fingerprint, settings
        self.finished: list[str] = []
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("fingerprint") != fingerprint:
                raise UsageError(
                    f"{path} was written by a different configuration{_difference(saved.get('settings'), settings)}; "
                    f"rerun with that configuration to resume it, or give another --out (or delete {path.parent}) to "
                    "start afresh"
                )
            self.finished = list(saved.get("finished", []))

    def is_finished(self, part: str) -> bool:
        """Whether ``part`` (a stage, or the warm start) is finished."""
        return part in self.finished

    def mark_finished(self, part: str) -> None:
        """Record ``part`` as finished (atomically)."""
        if part not in self.finished:
            self.finished.append(part)
        self.save()

    def save(self) -> None:
        """Write the state file (atomically): from now on a rerun under another configuration is refused."""
        payload = {"fingerprint": self.fingerprint, "finished": self.finished}
        atomic_write_json(self.path, payload | ({"settings": self.settings} if self.settings is not None else {}))


def _difference(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> str:
    """`` (KEY is A there, B here)`` for the first setting that differs, or nothing when either side is unknown."""
    changed = changed_settings(saved, current) if saved and current else []
    if not changed:
        return ""
    key, old, new = changed[0]
    return f" ({key} is {_shown(old)} there, {_shown(new)} here)"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"
