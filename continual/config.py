"""The continual-learning configuration: a fit config, a sequence of stages, held-out tasks, calibrations.

A YAML file (``configs/continual/*.yaml``) holds one :class:`ContinualConfig`. :func:`build_parser` reads it with
jsonargparse, as every other command reads its config: each field below is an option (``--seed 3``,
``--out DIR``), documented in ``--help`` by the docstring under it, type-checked, and an unknown key is an error.
Overrides are nested values laid over the fit config (``{trainer: {max_epochs: 4}}``), not command-line strings.
Nothing here imports torch, so ``--help`` and a bad config answer at once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace

from caopd_pl.errors import UsageError, one_line

WarmStartScope = Literal["all", "first", "none"]
Calibration = Literal["none", "empirical", "sdft", "caopd", "rlvr", "rlcr"]
"""What a sequence trains with: a ``data.calibration`` (``none`` = SDFT/OPD, ``empirical`` = CaOPD) or a method by
its name (:mod:`caopd_pl.methods`: ``sdft``, ``caopd``, and the RL baselines ``rlvr``, ``rlcr``)."""
EXAMPLE = "configs/continual/quick.yaml"


@dataclass(frozen=True)
class StageConfig:
    """One stage of the sequence: a task and its training budget."""

    name: str
    """Short unique name; the task's column in the matrices and its folder in the run directory."""
    task: dict[str, Any]
    """The task as ``{class_path, init_args}`` (what ``data.task`` takes in a fit config)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fit options of this stage only, nested as in a fit config (``{trainer: {max_epochs: 3}}``); laid over the
    global ``overrides``."""
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

    fit_config: str | list[str]
    """The Lightning config (``python -m caopd_pl fit --config X``) every stage and evaluation starts from, or a list
    of configs laid over each other in order, as repeated ``--config`` options lay them (a base and its layers:
    ``[configs/paper/base.yaml, configs/paper/model/qwen3_8b.yaml]``)."""
    out: str
    """Run directory."""
    stages: list[StageConfig]
    """The training sequence, in order."""
    held_out: list[HeldOutConfig] = field(default_factory=list)
    """Tasks never trained, evaluated after every stage."""
    calibrations: list[Calibration] = field(default_factory=lambda: ["none", "empirical"])
    """What to run the whole sequence with, each its own ``OUT/<name>``: ``none`` (SDFT/OPD) and ``empirical``
    (CaOPD), the ``data.calibration`` values, or methods by name: ``sdft``, ``caopd``, ``rlvr``, ``rlcr`` (GRPO with
    the correctness or the RLCR reward, :mod:`caopd_pl.methods`)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Fit options of every stage and evaluation, nested as in a fit config (``{trainer: {max_epochs: 4}}``). The
    confidence readouts every evaluation computes are ``model.readout`` (``{model: {readout: {report: [greedy,
    expected, sampled], num_samples: 8}}}``): the primary readout (``greedy`` by default) fills the matrices and
    figures, each computed readout its own entry of the summaries' ``by_readout``."""
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
        if not self.calibrations:
            raise ValueError(f"calibrations must list at least one of {', '.join(get_args(Calibration))}")
        for entry in (*self.stages, *self.held_out):
            if not isinstance(entry.task, dict) or "class_path" not in entry.task:
                raise ValueError(f"task of {entry.name!r} must be a {{class_path, init_args}} mapping")

    @property
    def fit_configs(self) -> list[str]:
        """:attr:`fit_config` as a list, base first."""
        return [self.fit_config] if isinstance(self.fit_config, str) else list(self.fit_config)

    @property
    def task_names(self) -> list[str]:
        """Trainable tasks in order, then held-out tasks: the matrices' columns."""
        return [s.name for s in self.stages] + [h.name for h in self.held_out]

    def settings(self) -> dict[str, Any]:
        """Everything that changes results (not ``out`` nor ``calibrations``), the fit config's text included."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("out", "calibrations")}
        payload["fit_config_text"] = "".join(Path(path).read_text() for path in self.fit_configs)
        return payload

    def fingerprint(self) -> str:
        """Hash of :meth:`settings`, to refuse a mixed resume."""
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


def build_parser(prog: str = "python -m caopd_pl continual") -> ArgumentParser:
    """The parser of a continual config: ``--config X.yaml`` and every field of :class:`ContinualConfig`."""
    parser = ArgumentParser(
        prog=prog,
        description="Train a task sequence stage after stage; measure accuracy and calibration retention.",
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument("--config", action=ActionConfigFile, help=f"a continual YAML, e.g. {EXAMPLE}")
    parser.add_class_arguments(ContinualConfig, fail_untyped=True, instantiate=False)
    return parser


def load_config(path: str | Path, out: str | None = None) -> ContinualConfig:
    """Read and check a continual YAML; ``out`` replaces its run directory.

    Raises:
        UsageError: the file is missing, a key is unknown or a value is bad (one line naming them).
    """
    args = ["--config", str(path), *(["--out", out] if out else [])]
    return from_namespace(parse_args(build_parser(), args))


def parse_args(parser: ArgumentParser, args: list[str]) -> Namespace:
    """``parser.parse_args(args)``, a missing config file or a bad key or value reported as one line.

    Raises:
        UsageError: the config file is missing, a key is unknown or a value has the wrong type.
    """
    config = next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--config"), None)
    if config is not None and not Path(config).is_file():
        raise UsageError(f"--config={config!r}: no such file; give a continual YAML such as {EXAMPLE}")
    try:
        return parser.parse_args(args)
    except ArgumentError as err:
        # jsonargparse nests the failing key's reasons over several lines: 'Parser key "stages":\n  ...'.
        message = re.sub(r'Parser key "([^"]+)":;?\s*', r"\1: ", one_line(str(err))).replace(":; ", ": ")
        raise UsageError(f"--config={config!r}: {message} (every option: {parser.prog} --help)") from err


def from_namespace(namespace: Namespace) -> ContinualConfig:
    """The :class:`ContinualConfig` of parsed arguments (options that are not its fields are ignored).

    Raises:
        UsageError: a value the config itself refuses (no stage, a repeated name, a task without class_path).
    """
    values = {key: namespace[key] for key in ContinualConfig.__dataclass_fields__}
    try:
        values["stages"] = [StageConfig(**stage.as_dict()) for stage in values["stages"] or []]
        values["held_out"] = [HeldOutConfig(**entry.as_dict()) for entry in values["held_out"] or []]
        return ContinualConfig(**values)
    except (TypeError, ValueError) as err:
        sources = [str(path) for path in namespace.get("config") or [] if path is not None]
        raise UsageError(f"--config={(sources or [None])[-1]!r}: {one_line(err)}") from err
