"""The Lightning entry point: ``python -m caopd_pl fit|validate|test|predict --config X.yaml``.

One :class:`LightningCLI` subclass fixes what CaOPD needs of the trainer (rollouts regenerated every epoch, no
distributed sampler on top of the per-rank prompt split), hands the module the datamodule's task and rollout engine
(linked at instantiation: one engine serves rollouts and evaluation), saves the resolved config beside the logs, and
makes the command line strict and quiet:

- every output path derives from ``trainer.default_root_dir`` (``ROOT``): a logger without ``save_dir`` (or a CSV
  logger when the config names none) writes to ``ROOT/logs/version_N``, a ``ModelCheckpoint`` without ``dirpath``
  to ``ROOT/checkpoints`` (the shipped configs name neither, so ``--trainer.default_root_dir`` moves everything);
  ``validate``, ``test`` and ``predict`` write to ``ROOT/<stage>/<checkpoint name>/``: a rerun of the same
  evaluation replaces its results, another evaluation of the checkpoint (another verifier, split, readout...)
  writes beside them to ``<checkpoint name>-v1``, ``-v2``...; a start-up that fails on bad input removes the log
  folder it created;
- a killed ``fit`` resumes bit-identically (:mod:`caopd_pl.resume`): checkpoints are written atomically, each
  epoch's global random state is seeded by (seed, epoch), and ``--ckpt_path last`` with no last checkpoint to find
  is an error rather than a fresh run;
- a checkpoint given with ``--ckpt_path`` is checked before anything is built (:mod:`caopd_pl.checkpoints`: every
  record against its checksum, every weight finite), and ``fit`` compares its saved config with the command's: a
  resume that changes the experiment is refused (:func:`caopd_pl.resume.check_same_experiment`), and the config's
  settings are used as given (Lightning would replace its model settings with the checkpoint's);
- options are never abbreviated (``--data.rollout.num_sample`` is an error, not ``num_samples``);
- a bad option or value raises :class:`caopd_pl.errors.UsageError`, one line (``python -m caopd_pl`` prints it and
  exits with status 2);
- ``--help`` shows the docstring under each dataclass field; the progress bar shows no ``v_num``; Lightning's
  cloud-logging tips and the deprecation warnings of its own internals are silenced; ``fit`` ends with a summary.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import io
import itertools
import logging
import os
import re
import sys
import warnings
from operator import attrgetter
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, Namespace, set_parsing_settings
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from caopd_pl.callbacks import RolloutStats, RunSummary, hide_version_number
from caopd_pl.checkpoints import read_checkpoint
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.errors import UsageError, one_line
from caopd_pl.losses import upgrade_loss_settings
from caopd_pl.module import CaOPDModule
from caopd_pl.resume import (
    AtomicCheckpointIO,
    EpochSeed,
    SavedConfig,
    changed_settings,
    check_last_checkpoint,
    check_same_experiment,
    last_checkpoint,
)

PROG = "python -m caopd_pl"
TRAINER_DEFAULTS = {
    "reload_dataloaders_every_n_epochs": 1,
    "use_distributed_sampler": False,
    "num_sanity_val_steps": 0,
}
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
CHECKPOINT_CALLBACK = "lightning.pytorch.callbacks.ModelCheckpoint"
EVALUATION_STAGES = ("validate", "test", "predict")
LINKED_FROM_DATA = ("task", "shared_engine")
SPECIAL_CKPT_PATHS = ("best", "hpc", "registry")
EVALUATION_MAY_DIFFER = (
    "trainer.logger",
    "trainer.callbacks",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.profiler",
    "num_threads",
    "data.eval_batch_size",
    "data.rollout.gpu_memory_utilization",
    "data.rollout.enable_sleep_mode",
)
"""Keys in which two evaluations of a checkpoint may differ and still write (and replace) the same results folder."""
BUILTIN_TASKS = tuple(
    f"caopd_pl.tasks.{name}" for name in ("arithmetic", "strings", "jsonl", "science", "tooluse", "reasoning_gym")
)
"""Imported before the parsers are built, so that ``data.task`` takes their short names (``--data.task.help
JsonlTask``, ``class_path: JsonlTask``): jsonargparse knows the subclasses that are imported."""
START_UP_FILES = ("config.yaml", "hparams.yaml")
"""What a log folder holds before a run has logged anything."""


class CaOPDCLI(LightningCLI):
    """LightningCLI with CaOPD's trainer defaults, output paths under ``default_root_dir``, and strict parsing."""

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        for name in BUILTIN_TASKS:
            importlib.import_module(name)
        # exit_on_error=False: a parse error raises ArgumentError, which cli_main turns into one line instead of a
        # 100-line usage dump.
        kwargs = {"allow_abbrev": False, "exit_on_error": False, **kwargs}
        kwargs.setdefault("prog", PROG)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.set_defaults({f"trainer.{key}": value for key, value in TRAINER_DEFAULTS.items()})
        # The module reads its task and samples through the datamodule's engine, handed over explicitly (not read
        # through the trainer); the datamodule is instantiated first.
        for name in LINKED_FROM_DATA:
            parser.link_arguments("data", f"model.{name}", compute_fn=attrgetter(name), apply_on="instantiate")
        parser.add_argument(
            "--num_threads",
            type=int | None,
            default=None,
            help="CPU threads of torch's intra-op pool (torch.set_num_threads); null keeps torch's default "
            "(OMP_NUM_THREADS, else one per core). Small models on a shared CPU run fastest with 1: every small op "
            "waits at a barrier for a descheduled thread (docs/quickstart.md, 'Threads').",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            raise UsageError(self._one_line(err, args)) from err

    def _one_line(self, err: ArgumentError, args: Any) -> str:
        """The parser's complaint in one line, with the closest known option to an unknown one."""
        message = _without_union_noise(re.sub(r'Parser key "([^"]+)":;?\s*', r"\1: ", one_line(err.message or err)))
        args = list(sys.argv[1:] if args is None else args)
        stage = args[0] if args and args[0] in self.subcommands() else None
        for unknown in _unknown_keys(message):
            close = difflib.get_close_matches(unknown, _option_keys(stage_parser(self, stage)), n=1, cutoff=0.8)
            if close:
                message += f"; did you mean {close[0]}?"
                break
        else:
            message += _init_arg_hint(message)
        if "arguments are required" in message:
            message += "; start from a config, e.g. --config configs/quickstart.yaml"
        return f"{message} (every option: {PROG} {stage or 'fit'} --help)"

    def _parse_ckpt_path(self) -> None:
        # Lightning's own step: it replaces the config's model settings with the checkpoint's. Before it, check the
        # checkpoint file, and for fit compare the settings instead (a resume keeps the config's, checked equal).
        # A private step of LightningCLI: no public hook runs between parsing and its reading of the checkpoint
        # (checked against the pinned Lightning: tests/test_library_versions.py).
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if not ckpt_path:
            return
        _check_ckpt_path(ckpt_path)
        checkpoint_dirs = _checkpoint_dirs(config)
        check_last_checkpoint(ckpt_path, checkpoint_dirs)
        path = _checkpoint_file(ckpt_path, checkpoint_dirs)
        if path is None:  # best, hpc, registry, a remote path: Lightning resolves them
            super()._parse_ckpt_path()
            return
        # One process per machine reads the whole file for its checks (a launcher's other ranks start later, or
        # are stopped with it).
        checkpoint = read_checkpoint(path, check=int(os.environ.get("LOCAL_RANK", "0")) == 0)
        if subcommand != "fit":
            self._use_checkpoint_settings(checkpoint, subcommand)
            return
        check_same_experiment(checkpoint, _config_dict(stage_parser(self, subcommand), config), ckpt_path)

    def _use_checkpoint_settings(self, checkpoint: dict[str, Any], subcommand: str) -> None:
        """Lightning's step for evaluation: the checkpoint's model settings replace the config's, with settings
        written by an older version in today's form (``model.loss``: :func:`caopd_pl.losses.upgrade_loss_settings`).

        Raises:
            UsageError: the checkpoint's settings do not parse.
        """
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        elif isinstance(hparams.get("loss"), dict):
            hparams["loss"] = upgrade_loss_settings(hparams["loss"])
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except ArgumentError as err:
            raise UsageError(f"--ckpt_path: its saved model settings do not parse: {one_line(str(err))}") from err

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        _set_threads(config.get("num_threads"))
        root = Path(config.trainer.default_root_dir or ".")
        _checkpoint_dirs(config)  # checked (with --ckpt_path) in _parse_ckpt_path; filled in here without one
        if self.subcommand in EVALUATION_STAGES:
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and ckpt_path not in ("last", *SPECIAL_CKPT_PATHS) and "://" not in ckpt_path:
                config.ckpt_path = os.path.abspath(ckpt_path)  # saved in config.yaml: which checkpoint was evaluated
        config.trainer.logger = _logger_under(config.trainer.logger, root, self.subcommand, config.get("ckpt_path"))
        if self.subcommand in EVALUATION_STAGES:
            _evaluation_version(config, root, self.subcommand, stage_parser(self, self.subcommand))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except UsageError:
            raise
        except ValueError as err:
            # The constructors validate their arguments: a bad value fails at construction, naming its key.
            message = _without_union_noise(one_line(err))  # a task's constructor fails inside the optional data.task
            raise UsageError(_with_full_key(message, _option_keys(stage_parser(self, self.subcommand)))) from err

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand in ("fit", None):  # None: the caller runs the trainer (fit, for the runner)
            _check_no_distributed_sampler(trainer, config.trainer.use_distributed_sampler)
        hide_version_number(trainer)
        saved = SavedConfig(_config_dict(stage_parser(self, self.subcommand), config))  # for a resume to compare with
        trainer.callbacks += [RolloutStats(), RunSummary(), saved]
        _make_resumable(trainer, config.seed_everything)
        return trainer

    def _run_subcommand(self, subcommand: str) -> None:
        # A private step of LightningCLI, the one place after the loggers' finalize (a callback's on_exception runs
        # before it, and CSVLogger's may still write metrics.csv into a folder removed there); checked against the
        # pinned Lightning (tests/test_library_versions.py).
        created = _log_dirs_to_create(self.trainer)
        try:
            super()._run_subcommand(subcommand)
        except UsageError:  # bad input found at start-up (the data against the config): no run to keep logs of
            _remove_unused(created)
            raise


def _unknown_keys(message: str) -> list[str]:
    # argparse: "unrecognized arguments: --a.b 4"; jsonargparse, for a YAML key: 'Key "a.b" is not expected' or
    # "Subcommand 'fit' does not accept option 'a.b'".
    options = re.findall(r"(--[\w.]+)", message.partition("nrecognized arguments:")[2])
    keys = re.findall(r'[Kk]ey "([\w.]+)" is not expected|does not accept option \'([\w.]+)\'', message)
    keys = [key for pair in keys for key in pair if key]
    return options + [f"--{key}" for key in keys]


def _without_union_noise(message: str) -> str:
    """For an optional class (``data.task``: a Task or null), the complaint about the class given, without the list
    of union members that did not match and the echo of the value."""
    key, union, rest = message.partition("Does not validate against any of the Union subtypes")
    errors = [error for error in rest.split("; - ")[1:] if not error.startswith("Expected a <class 'NoneType'>")]
    if not union or len(errors) != 1:
        return message
    error = re.sub(r"^Problem with given (class_path '[\w.]+'):;?\s*", r"\1: ", errors[0])
    return f"{key}{error}"


def _init_arg_hint(message: str) -> str:
    """``; did you mean X?`` for an option a class given by ``class_path`` does not take, when one of its arguments is
    close to it (jsonargparse: "Problem with given class_path 'a.B': ... Option 'x' is not accepted"); else ''."""
    found = re.search(r"class_path '([\w.]+)'.*?Option '(\w+)' is not accepted", message)
    if found is None:
        return ""
    module, _, name = found.group(1).rpartition(".")
    try:
        parameters = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    except (ImportError, AttributeError, TypeError, ValueError):
        return ""
    close = difflib.get_close_matches(found.group(2), parameters, n=1, cutoff=0.6)
    return f"; did you mean init_args.{close[0]}?" if close else ""


def _with_full_key(message: str, options: list[str]) -> str:
    """``message`` with its first dotted key written in full when it is the tail of exactly one option.

    A dataclass validating itself knows its own field (``rollout.num_samples``), not where the config nests it
    (``data.rollout.num_samples``).
    """
    found = re.search(r"\b[a-z_]+(?:\.[a-z_]+)+\b", message)
    if found is None or f"--{found.group()}" in options:
        return message
    matches = [option[2:] for option in options if option.endswith(f".{found.group()}")]
    return message.replace(found.group(), matches[0], 1) if len(matches) == 1 else message


def _option_keys(parser: LightningArgumentParser) -> list[str]:
    """Every key a config for ``parser`` may hold, groups included, as an option (``--data.rollout.num_samples``)."""
    return [f"--{key}" for key in parser.get_defaults(skip_validation=True).keys(branches=True)]


def stage_parser(cli: LightningCLI, stage: str | None) -> LightningArgumentParser:
    """The parser of the subcommand ``stage`` (``fit``...), or the main parser for None.

    Lightning keeps its subcommands' parsers private (``LightningCLI._parser``), and jsonargparse offers no public way
    to them from the main parser: the one private call of this module (beside the overrides of ``_parse_ckpt_path``
    and ``_run_subcommand``), checked against the Lightning version pyproject.toml pins
    (tests/test_library_versions.py fails on another and names what to re-check).
    """
    return cli._parser(stage)


def _class_path(value: Any) -> str | None:
    return value.get("class_path") if isinstance(value, (Namespace, dict)) else None


def _is_model_checkpoint(callback: Any) -> bool:
    """Whether a callback config is a ``ModelCheckpoint`` or a subclass of it (imported to tell)."""
    class_path = _class_path(callback)
    if class_path in (None, CHECKPOINT_CALLBACK):
        return class_path is not None
    module, _, name = class_path.rpartition(".")
    try:
        return issubclass(getattr(importlib.import_module(module), name), ModelCheckpoint)
    except (ImportError, AttributeError, TypeError, ValueError):  # instantiation reports a bad class path
        return False


def _logger_under(logger: Any, root: Path, stage: str | None, ckpt_path: str | None) -> Any:
    """The logger config with its folder under ``root`` when the config leaves it to the CLI.

    The default logger (``None``/``True``) becomes a CSV logger; a logger given without ``save_dir`` gets ``root``.
    For evaluation stages such a logger writes to ``root/<stage>/<checkpoint name>``: one folder per evaluated
    checkpoint, replaced on a rerun, instead of a new ``logs/version_N`` each time.
    """
    if logger in (None, True):
        logger = Namespace(class_path=CSV_LOGGER, init_args=Namespace(save_dir=None, name="logs"))
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if init_args is None or "save_dir" not in init_args or init_args.save_dir is not None:
        return logger
    init_args.save_dir = str(root)
    if stage in EVALUATION_STAGES:
        checkpoint = Path(ckpt_path).stem if ckpt_path and ckpt_path not in ("last", "best") else ckpt_path
        init_args.name, init_args.version = stage, checkpoint or "initial"
    return logger


def _set_threads(count: int | None) -> None:
    if count is None:
        return
    if count < 1:
        raise UsageError(f"--num_threads={count}: must be >= 1, or null for torch's default")
    import torch

    torch.set_num_threads(count)


def _make_resumable(trainer: Trainer, seed: Any) -> None:
    """Atomic checkpoint writes, and (with an integer ``seed_everything``) epochs seeded by (seed, epoch)."""
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # a plugin the config chose is kept
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if isinstance(seed, int) and not isinstance(seed, bool):
        trainer.callbacks.append(EpochSeed(seed))


def _check_no_distributed_sampler(trainer: Trainer, use_distributed_sampler: bool) -> None:
    """Refuse Lightning's distributed sampler when fitting on several ranks: each rank already samples its own
    prompts, and the sampler would replace the seeded batch order. Checked on the config: the trainer keeps the
    setting only in a private attribute."""
    if trainer.world_size > 1 and use_distributed_sampler:
        raise UsageError(
            "trainer.use_distributed_sampler=true: each rank already samples its own prompts; set it to false"
        )


def _check_ckpt_path(ckpt_path: str | None) -> None:
    if ckpt_path and ckpt_path not in ("last", *SPECIAL_CKPT_PATHS) and "://" not in ckpt_path:
        if not Path(ckpt_path).is_file():
            raise UsageError(f"--ckpt_path={ckpt_path!r}: no such file; give a .ckpt file written by fit, or 'last'")


def _checkpoint_dirs(config: Namespace) -> list[str]:
    """The folders of the config's ``ModelCheckpoint`` callbacks; one without ``dirpath`` gets ``ROOT/checkpoints``."""
    root = Path(config.trainer.default_root_dir or ".")
    folders = []
    for callback in config.trainer.callbacks or []:
        if _is_model_checkpoint(callback):
            if callback.init_args.get("dirpath") is None:
                callback.init_args.dirpath = str(root / "checkpoints")
            folders.append(callback.init_args.dirpath)
    return folders


def _checkpoint_file(ckpt_path: str, checkpoint_dirs: list[str]) -> Path | None:
    """The local file ``--ckpt_path`` names (``last``: the one Lightning picks), or None (``best``, remote paths)."""
    if ckpt_path == "last":
        return last_checkpoint(checkpoint_dirs)
    if ckpt_path in SPECIAL_CKPT_PATHS or "://" in ckpt_path:
        return None
    return Path(ckpt_path)


def _config_dict(parser: LightningArgumentParser, config: Namespace) -> dict[str, Any]:
    """``config`` as nested dicts, as ``config.yaml`` and ``--print_config`` show it."""
    return yaml.safe_load(parser.dump(config, skip_unset=False, skip_validation=True))


def _evaluation_version(config: Namespace, root: Path, stage: str, parser: LightningArgumentParser) -> None:
    """Point the evaluation's logger at a folder of its own: ``<checkpoint name>`` when it is free or holds the same
    evaluation (replaced), else the first ``<checkpoint name>-vN`` that is; says so when it is not the first."""
    init_args = config.trainer.logger.get("init_args") if isinstance(config.trainer.logger, Namespace) else None
    if init_args is None or init_args.get("save_dir") != str(root) or init_args.get("name") != stage:
        return  # a logger the config placed itself
    current, name = _config_dict(parser, config), init_args.version
    taken = _other_evaluation(root / stage / name, current)
    versions = (name if index == 0 else f"{name}-v{index}" for index in itertools.count())
    version = next(v for v in versions if _other_evaluation(root / stage / v, current) is None)
    init_args.version = version
    if taken is not None:
        print(f"{root / stage / name} holds {taken}; writing {root / stage / version}", file=sys.stderr)


def _other_evaluation(folder: Path, current: dict[str, Any]) -> str | None:
    """What makes ``folder`` the results of another evaluation than ``current``, or None (free, or the same one)."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return None
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return "results without a readable config.yaml"
    changed = changed_settings(saved, current, EVALUATION_MAY_DIFFER)
    if saved.get("ckpt_path") != current.get("ckpt_path"):
        changed.insert(0, ("ckpt_path", saved.get("ckpt_path"), current.get("ckpt_path")))
    if not changed:
        return None
    key, old, new = changed[0]
    return f"another evaluation ({key} is {old!r} there, {new!r} here)"


def _log_dirs_to_create(trainer: Trainer) -> list[Path]:
    """The loggers' folders (and their parents) that do not exist yet: the ones this run will create."""
    missing = []
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)  # CSV and TensorBoard loggers; computing it creates nothing
        folder = Path(log_dir) if log_dir else None
        while folder is not None and not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
    return missing


def _remove_unused(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that holds nothing but the files of a start-up."""
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        if folder.is_dir() and all(item.name in START_UP_FILES and item.is_file() for item in folder.iterdir()):
            for item in folder.iterdir():
                item.unlink()
            folder.rmdir()


def _not_a_tip(record: logging.LogRecord) -> bool:
    return "Tip:" not in str(record.msg)


def quiet_console() -> None:
    """Silence what Lightning prints that is not about this run: cloud-service tips, its own deprecated calls."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _not_a_tip not in logger.filters:
            logger.addFilter(_not_a_tip)
    # Lightning's pytree helper uses a torch API that torch deprecates: nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")


def help_text(command: str) -> str:
    """What ``python -m caopd_pl <command> --help`` prints: the parser's help, as argparse prints it before exiting."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        cli_main([command, "--help"])
    return printed.getvalue()


def cli_main(args: list[str] | None = None, run: bool = True) -> CaOPDCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests, benchmarks, continual runner).

    Raises:
        UsageError: a bad option, value or path (one line: the option, the value, the fix).
    """
    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    quiet_console()
    argv = sys.argv
    if args is not None:
        sys.argv = argv[:1]  # LightningCLI warns on every build when it sees both ``args`` and command-line arguments
    try:
        return CaOPDCLI(
            CaOPDModule,
            RolloutDataModule,
            args=args,
            run=run,
            save_config_kwargs={"overwrite": True},
        )
    finally:
        sys.argv = argv
