"""The state file of a continual sequence: which stages are finished, under which configuration.

Every file of a run is written atomically (:mod:`caopd_pl.files`), so a killed runner leaves either the old file or
the new one; this state file is what tells a rerun which stages it may skip.
"""

from __future__ import annotations

import json
from pathlib import Path

from caopd_pl.files import atomic_write_json


class RunState:
    """The state file of one sequence: which stages are finished (trained and evaluated), and the config hash.

    Args:
        path: the JSON state file.
        fingerprint: hash of the configuration; a state written under another hash is refused.

    Raises:
        ValueError: ``path`` was written under another fingerprint.
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
        """Whether ``stage`` was trained and evaluated."""
        return stage in self.finished

    def mark_finished(self, stage: str) -> None:
        """Record ``stage`` as finished (atomically)."""
        if stage not in self.finished:
            self.finished.append(stage)
        atomic_write_json(self.path, {"fingerprint": self.fingerprint, "finished": self.finished})
