"""The continual-learning configuration: a fit config, a sequence of stages, held-out tasks, calibrations.

A YAML file (``configs/continual/*.yaml``) holds one :class:`ContinualConfig`; :func:`load_config` reads and checks
it, naming the offending key on a bad value.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

WarmStartScope = Literal["all", "first", "none"]
_CALIBRATIONS = ("none", "empirical")


@dataclass(frozen=True)
class StageConfig:
    """One stage of the sequence: a task and its training budget."""

    name: str
    """Short unique name; the task's column in the matrices and its folder in the run directory."""
    task: dict[str, Any]
    """The task as ``{class_path, init_args}`` (what ``data.task`` takes in a fit config)."""
    overrides: list[str] = field(default_factory=list)
    """Fit options of this stage only, as CLI overrides (``--trainer.max_epochs=3``); applied after the global ones."""
    split: str = "test"
    """The split evaluated after every stage."""


@dataclass(frozen=True)
class HeldOutConfig:
    """A task that is never trained (out of distribution), evaluated after every stage."""

    name: str
    """Short unique name; the task's column in the matrices."""
    task: dict[str, Any]
    """The task as ``{class_path, init_args}``."""
    split: str = "test"
    """The split evaluated (``test``, or ``ood`` for a task that has one)."""


@dataclass(frozen=True)
class ContinualConfig:
    """A continual-learning run."""

    fit_config: str
    """The Lightning config (``python -m caopd_pl fit --config X``) every stage and evaluation starts from."""
    out: str
    """Run directory."""
    stages: list[StageConfig]
    """The training sequence, in order."""
    held_out: list[HeldOutConfig] = field(default_factory=list)
    """Tasks never trained, evaluated after every stage."""
    calibrations: list[str] = field(default_factory=lambda: ["none", "empirical"])
    """``data.calibration`` values to run the whole sequence with (``none`` = SDFT/OPD, ``empirical`` = CaOPD)."""
    overrides: list[str] = field(default_factory=list)
    """Fit options of every stage and evaluation, as CLI overrides."""
    warm_start: WarmStartScope = "all"
    """Supervised warm start before stage 1 on the demonstrations of ``all`` trainable tasks, the ``first`` only,
    or ``none`` (the fit config's model is used as is)."""
    seed: int = 0
    """Base seed: the warm start uses it, stage i (1-based) uses seed + i."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages must list at least one stage")
        names = [s.name for s in self.stages] + [h.name for h in self.held_out]
        if len(set(names)) != len(names) or "base" in names:
            raise ValueError(f"stages[].name and held_out[].name must be unique and not 'base', got {names}")
        bad = [c for c in self.calibrations if c not in _CALIBRATIONS]
        if bad or not self.calibrations:
            raise ValueError(f"calibrations must be a non-empty list of {_CALIBRATIONS}, got {self.calibrations}")
        if self.warm_start not in ("all", "first", "none"):
            raise ValueError(f"warm_start must be 'all', 'first' or 'none', got {self.warm_start!r}")
        for entry in (*self.stages, *self.held_out):
            if not isinstance(entry.task, dict) or "class_path" not in entry.task:
                raise ValueError(f"task of {entry.name!r} must be a {{class_path, init_args}} mapping")

    @property
    def task_names(self) -> list[str]:
        """Trainable tasks in order, then held-out tasks: the matrices' columns."""
        return [s.name for s in self.stages] + [h.name for h in self.held_out]

    def fingerprint(self) -> str:
        """Hash of everything that changes results (not ``out`` nor ``calibrations``), to refuse a mixed resume."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("out", "calibrations")}
        payload["fit_config_text"] = Path(self.fit_config).read_text()
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: str | Path, out: str | None = None) -> ContinualConfig:
    """Read a continual YAML; ``out`` replaces its run directory."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    allowed = sorted(ContinualConfig.__dataclass_fields__)
    if set(raw) - set(allowed):
        raise ValueError(f"{path}: unknown keys {sorted(set(raw) - set(allowed))}; allowed: {allowed}")
    for key in ("fit_config", "out", "stages"):
        if key not in raw and not (key == "out" and out):
            raise ValueError(f"{path}: missing key {key!r}")
    raw["stages"] = [_entry(StageConfig, s, f"{path}: stages[{i}]") for i, s in enumerate(raw["stages"] or [])]
    held_out = raw.get("held_out") or []
    raw["held_out"] = [_entry(HeldOutConfig, h, f"{path}: held_out[{i}]") for i, h in enumerate(held_out)]
    if out:
        raw["out"] = out
    return ContinualConfig(**raw)


def _entry(cls, raw: Any, where: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be a mapping, got {raw!r}")
    unknown = set(raw) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
    return cls(**raw)
