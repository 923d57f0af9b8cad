"""Continual CaOPD: train a sequence of tasks one after another, measure how accuracy and calibration are retained.

For each ``data.calibration`` of the config (``none`` = SDFT/OPD, ``empirical`` = CaOPD):

1. warm start (shared by the calibrations, under ``OUT/base``): the fit config's model, fine-tuned on the golden
   demonstrations of ``all`` trainable tasks (default), of the ``first`` one, or not at all. A tiny model trained
   from scratch can do nothing without it, and on-policy distillation needs a non-zero success rate to learn from;
   warming on all tasks plays the part of a pretrained model with some skill everywhere, so the sequence measures
   what distillation then does to each skill, not whether it can bootstrap one;
2. stage i (1..T) distils task i for its budget (the fit config plus the global and the stage's overrides), starting
   from stage i-1's student *and* EMA teacher (saved as a Hugging Face directory and a state dict);
3. after the warm start and after every stage, the student answers greedily every task of the sequence (seen and
   unseen) and every held-out task, its confidence read with every readout of the fit config's ``model.readout``
   (:mod:`caopd_pl.readouts`; set it in ``overrides``); the records are cached as JSONL.

Writes ``OUT/<calibration>/continual_summary.json`` (matrices M[metric][i][j], row 0 the warm start, and the
retention figures of :mod:`caopd_pl.continual.metrics`, for the primary readout; the same for every readout under
``by_readout``), ``heatmap_accuracy.png``, ``heatmap_ece.png``, ``curves.png`` (primary readout); and across
calibrations ``OUT/comparison.json``, ``OUT/comparison.md``, ``OUT/heatmaps.png``.

Resumable: every file is written atomically, ``state.json`` lists the finished stages, a stage's saved model and
each evaluation are reused. A runner killed during stage i restarts stage i from stage i-1's saved student and
teacher with the same seeds, so it ends with the summary an uninterrupted run writes. The warm start has a state file
of its own (``OUT/base/state.json``), written before it starts; every state file holds the configuration's
fingerprint, and all of them are checked before anything runs: a rerun under another configuration (another
``--seed``...) on the same ``OUT`` stops in one line (:class:`caopd_pl.continual.storage.RunState`) instead of
mixing runs.

Run: ``python -m caopd_pl continual --config configs/continual/quick.yaml``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from caopd_pl import pipeline
from caopd_pl.continual.config import ContinualConfig, StageConfig
from caopd_pl.continual.metrics import MATRIX_METRICS, retention_figures
from caopd_pl.continual.plots import comparison_heatmaps, matrix_heatmap, task_curves
from caopd_pl.continual.storage import RunState
from caopd_pl.errors import UsageError
from caopd_pl.files import (
    atomic_save_dir,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    write_jsonl,
)
from caopd_pl.methods import method_override
from caopd_pl.metrics import answer_tensors, calibration_summary, without_nan
from caopd_pl.pipeline import Experiment
from caopd_pl.readouts import summaries_by_readout
from caopd_pl.tasks.base import TASKS, Task
from caopd_pl.warmstart import WarmStartConfig

COMPARISON_KEYS = (
    "final_accuracy",
    "final_ece",
    "backward_transfer",
    "forgetting",
    "calibration_forgetting",
    "forward_transfer",
    "held_out_accuracy",
    "held_out_ece",
)
READOUT_KEYS = ("final_ece", "calibration_forgetting", "ece_backward_transfer", "held_out_ece")
"""The retention figures that depend on the confidence readout, compared across readouts in ``comparison.md``."""


class ContinualRunner:
    """Runs a :class:`ContinualConfig`: warm start, the stage sequence per calibration, summaries and figures.

    Args:
        config: the run.
    """

    def __init__(self, config: ContinualConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.settings = config.settings()
        self.fingerprint = config.fingerprint()
        self.eval_tasks = [(s.name, s.task, s.split) for s in config.stages]
        self.eval_tasks += [(h.name, h.task, h.split) for h in config.held_out]

    # ---- the whole run -------------------------------------------------------------------------------------------

    def run(self, calibrations: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Run (or resume) every calibration; returns calibration -> summary.

        Raises:
            UsageError: ``OUT`` holds parts of a run of another configuration (checked before anything runs).
        """
        calibrations = calibrations or self.config.calibrations
        states = {name: self.state(name) for name in ["base", *calibrations]}
        base = self.warm_start(states["base"])
        base_rows = self.evaluate(base, self.out / "base" / "eval")
        summaries = {}
        for calibration in calibrations:
            summaries[calibration] = self.run_sequence(calibration, base, base_rows, states[calibration])
        if len(summaries) > 1:
            self.write_comparison(summaries)
        return summaries

    def state(self, part: str) -> RunState:
        """The state file of ``base`` (the warm start) or of a calibration's sequence, checked against the config.

        Raises:
            UsageError: it was written under another configuration.
        """
        return RunState(self.out / part / "state.json", self.fingerprint, self.settings)

    def run_sequence(
        self, calibration: str, base: Path, base_rows: dict[str, dict], state: RunState | None = None
    ) -> dict[str, Any]:
        """Train the stages in order with ``calibration``; returns (and writes) the sequence's summary."""
        root = self.out / calibration
        state = state or self.state(calibration)
        state.save()  # before the first stage: its model and evaluations belong to this configuration
        previous, rows = base, [base_rows]
        for index, stage in enumerate(self.config.stages, start=1):
            stage_dir = root / f"{index:02d}_{stage.name}"
            if not state.is_finished(stage.name):
                started = time.perf_counter()
                self.train_stage(index, stage, calibration, previous, stage_dir)
                rows.append(self.evaluate(stage_dir, stage_dir / "eval"))
                atomic_write_json(stage_dir / "timing.json", {"seconds": time.perf_counter() - started})
                state.mark_finished(stage.name)
                print(f"[continual] {calibration}: stage {index} ({stage.name}) finished", flush=True)
            else:
                rows.append(self.evaluate(stage_dir, stage_dir / "eval"))
            previous = stage_dir
        summary = self.summarize(calibration, rows)
        self.write_sequence(root, summary)
        return summary

    # ---- pieces --------------------------------------------------------------------------------------------------

    def warm_start(self, state: RunState | None = None) -> Path:
        """The base model (``OUT/base/student``), warm-started unless this configuration made it already.

        Raises:
            UsageError: ``OUT/base`` holds a model no state file vouches for (a run of an older version).
        """
        base = self.out / "base"
        state = state or self.state("base")
        if (base / "student" / "config.json").exists():
            # The state file precedes the model; a run of an older version has only its sequences' state files.
            if not state.path.exists() and any(self.state(c).path.exists() for c in self.config.calibrations):
                state.mark_finished("warm_start")
            if state.path.exists():
                return base
            raise UsageError(
                f"{base} holds a warm start that no state file ties to a configuration (a run of an older version); "
                f"delete {base} to warm-start again, or give another --out"
            )
        state.save()  # before the work: a rerun under another configuration is refused from now on
        first = self.config.stages[0]
        experiment = self._build(first.task, base / "build", {"model": {"model": {"tiny": {"seed": self.config.seed}}}})
        if self.config.warm_start != "none":
            scope = self.config.stages if self.config.warm_start == "all" else self.config.stages[:1]
            examples = [example for stage in scope for example in instantiate_task(stage.task).split("train")]
            settings = dataclasses.replace(experiment.module.warm_start or WarmStartConfig(), seed=self.config.seed)
            losses = pipeline.warm_start(experiment, examples, config=settings, seed=self.config.seed)
            atomic_write_json(base / "warm_start_losses.json", losses)
        atomic_save_dir(base / "student", lambda folder: pipeline.save_student(experiment, folder))
        state.mark_finished("warm_start")
        return base

    def train_stage(self, index: int, stage: StageConfig, calibration: str, previous: Path, stage_dir: Path) -> None:
        """Distil ``stage`` from ``previous``'s student and teacher; saves ``stage_dir/{teacher.pt, student}``."""
        if (stage_dir / "student" / "config.json").exists() and (stage_dir / "teacher.pt").exists():
            return  # trained before a crash during its evaluation
        seed = self.config.seed + index
        method = {"data": {"calibration": calibration}} if calibration in ("none", "empirical") else None
        method = method or method_override(calibration)
        experiment = self._build(
            stage.task,
            stage_dir / "train",
            stage.overrides,
            pipeline.starting_from(previous / "student"),
            method,
            {"data": {"seed": seed, "rollout": {"seed": seed}}, "seed_everything": seed},
        )
        # The warm start's teacher is its student, which make_teacher copies; an RL run's teacher is its reference
        # model, this stage's start (make_teacher's copy too), never an earlier stage's
        if (previous / "teacher.pt").exists() and experiment.datamodule.rl is None:
            experiment.module.teacher.load_state_dict(torch.load(previous / "teacher.pt", weights_only=True))
        pipeline.distil(experiment)
        teacher = {key: value.detach().cpu() for key, value in experiment.module.teacher.state_dict().items()}
        atomic_torch_save(teacher, stage_dir / "teacher.pt")
        atomic_save_dir(stage_dir / "student", lambda folder: pipeline.save_student(experiment, folder))

    def evaluate(self, model_root: Path, eval_dir: Path) -> dict[str, dict[str, Any]]:
        """Greedy answers of ``model_root/student`` on every task; task name -> :func:`summarize_records`."""
        results = {}
        for name, task, split in self.eval_tasks:
            path = eval_dir / f"{name}.jsonl"
            if not path.exists():
                layers = [pipeline.starting_from(model_root / "student"), {"data": {"test_split": split}}]
                experiment = self._build(task, eval_dir / "logs" / name, *layers)
                write_jsonl(path, pipeline.evaluate(experiment))
            results[name] = summarize_records(read_jsonl(path))
        return results

    # ---- results -------------------------------------------------------------------------------------------------

    def summarize(self, calibration: str, rows: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
        """The sequence's summary: matrices (row 0 = warm start) and retention figures of the primary readout, and
        the same per readout under ``by_readout`` (the readouts every evaluation computed)."""
        tasks = self.config.task_names
        cells = [row[task] for row in rows for task in tasks]
        readouts = [name for name in cells[0]["by_readout"] if all(name in cell["by_readout"] for cell in cells)]
        return {
            "calibration": calibration,
            "stages": ["base", *[s.name for s in self.config.stages]],
            "tasks": tasks,
            "trainable_tasks": [s.name for s in self.config.stages],
            "held_out_tasks": [h.name for h in self.config.held_out],
            **self._matrices_and_figures(rows),
            "readout": cells[0]["readout"],
            "by_readout": {name: self._matrices_and_figures(rows, name) for name in readouts},
        }

    def _matrices_and_figures(self, rows: list[dict[str, dict[str, Any]]], readout: str | None = None) -> dict:
        # {"matrices", "derived"} of the primary readout (None) or of ``readout``.
        def metrics(row: dict[str, dict[str, Any]], task: str) -> dict[str, Any]:
            return row[task] if readout is None else row[task]["by_readout"][readout]

        tasks = self.config.task_names
        matrices = {key: [[metrics(row, t)[key] for t in tasks] for row in rows] for key in (*MATRIX_METRICS, "n")}
        derived = retention_figures(matrices["accuracy"], matrices["ece"], len(self.config.stages))
        return {"matrices": matrices, "derived": derived}

    def write_sequence(self, root: Path, summary: dict[str, Any]) -> None:
        """``continual_summary.json`` and the figures of one calibration."""
        atomic_write_json(root / "continual_summary.json", summary)
        rows, tasks, trainable = summary["stages"], summary["tasks"], len(summary["trainable_tasks"])
        matrices = summary["matrices"]
        for key, cmap in (("accuracy", "viridis"), ("ece", "magma_r")):
            title = f"{key} after each stage (calibration: {summary['calibration']}, {summary['readout']} readout)"
            matrix_heatmap(matrices[key], rows, tasks, root / f"heatmap_{key}.png", title, trainable, cmap)
        curves = {key: matrices[key] for key in ("accuracy", "ece", "mean_confidence")}
        task_curves(curves, rows, tasks, root / "curves.png", trainable)
        print(f"[continual] wrote {root / 'continual_summary.json'} and figures", flush=True)

    def write_comparison(self, summaries: dict[str, dict[str, Any]]) -> None:
        """``comparison.json`` (calibration -> primary readout's figures, and ``by_readout``), ``comparison.md`` (one
        row per calibration, then one per calibration and readout) and ``heatmaps.png``."""
        table = {calibration: summary["derived"] for calibration, summary in summaries.items()}
        by_readout = {
            calibration: {name: entry["derived"] for name, entry in summary["by_readout"].items()}
            for calibration, summary in summaries.items()
        }
        json_table = {
            calibration: {**table[calibration], "by_readout": by_readout[calibration]} for calibration in table
        }
        atomic_write_json(self.out / "comparison.json", json_table)
        text = comparison_markdown(table)
        if any(by_readout.values()):
            text += "\n\n" + readout_markdown(by_readout)
        atomic_write_text(self.out / "comparison.md", text + "\n")
        comparison_heatmaps(summaries, self.out / "heatmaps.png")
        print(text, flush=True)

    def _build(self, task: dict[str, Any], root: Path, *overrides: Mapping[str, Any]) -> Experiment:
        # Later wins: the fit config with the task, its logger's folder, the global overrides, then the caller's
        # (stage, model, seeds).
        logger = {"trainer": {"logger": {"init_args": {"save_dir": str(root)}}}}
        return pipeline.build(self._task_config(task), root, [logger, self.config.overrides, *overrides])

    def _task_config(self, task: dict[str, Any]) -> Path:
        # The fit config with data.task replaced, a CSV logger and no checkpointing (the runner saves models).
        config = stacked_configs(self.config.fit_configs)
        config.setdefault("data", {})["task"] = task
        trainer = config.setdefault("trainer", {})
        trainer["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}}
        trainer |= {"enable_checkpointing": False, "callbacks": []}
        text = yaml.safe_dump(config, sort_keys=False)
        path = self.out / "configs" / f"{_digest(text)}.yaml"
        if not path.exists():
            atomic_write_text(path, text)
        return path


def stacked_configs(paths: Sequence[str | Path]) -> dict[str, Any]:
    """The YAML files ``paths`` laid over each other in order, as repeated ``--config`` options lay them: mappings
    merge key by key, any other value (a list too) replaces. (jsonargparse also drops a component's ``init_args``
    where a later file changes its ``class_path``; no shipped layer does.)"""
    config: dict[str, Any] = {}
    for path in paths:
        config = _laid_over(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


def _laid_over(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        both_mappings = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _laid_over(merged[key], value) if both_mappings else value
    return merged


def instantiate_task(spec: dict[str, Any]) -> Task:
    """A task from ``{class_path, init_args}`` (:data:`caopd_pl.tasks.base.TASKS`)."""
    return TASKS.build(spec)


def summarize_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Calibration summary of evaluation records with the primary readout's confidence (their ``confidence``), the
    primary's name as ``readout``, and ``by_readout``: {readout: summary} for each readout every record carries
    (none for records written before readouts, which read ``greedy``). NaN becomes None (JSON null)."""
    by_readout = {name: without_nan(summary) for name, summary in summaries_by_readout(records).items()}
    primary = records[0].get("readout", "greedy") if records else "greedy"
    return {**without_nan(calibration_summary(*answer_tensors(records))), "readout": primary, "by_readout": by_readout}


def comparison_markdown(table: dict[str, dict[str, float | None]]) -> str:
    """A Markdown table: one row per calibration, the retention figures as columns."""
    lines = ["| calibration | " + " | ".join(COMPARISON_KEYS) + " |", "|---|" + "---:|" * len(COMPARISON_KEYS)]
    for calibration, derived in table.items():
        cells = ["n/a" if derived[k] is None else f"{derived[k]:.3f}" for k in COMPARISON_KEYS]
        lines.append(f"| {calibration} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readout_markdown(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """A Markdown table of the figures that depend on the readout: one row per calibration and readout."""
    lines = ["| calibration | readout | " + " | ".join(READOUT_KEYS) + " |", "|---|---|" + "---:|" * len(READOUT_KEYS)]
    for calibration, readouts in table.items():
        for name, derived in readouts.items():
            cells = ["n/a" if derived[k] is None else f"{derived[k]:.3f}" for k in READOUT_KEYS]
            lines.append(f"| {calibration} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]
