"""Before and after: the model a run starts from and the model it ends with, on the same prompts.

``fit`` evaluates its starting model (after the warm start, when there is one) on the validation prompts before
the first epoch (``model.validate_start``), and compares it with the last validation when it ends: a table in its
summary, ``before_after.json`` and ``before_after.png`` (a reliability diagram of each, side by side) in the log
folder. ``test`` does the same for the checkpoint it tests on the test prompts (``model.test_start``), with the
starting weights ``fit`` kept beside the checkpoints (:mod:`caopd_pl.start_weights`), into the test's folder. A
base model that says 1.00 whatever it knows and a trained model whose confidence follows its accuracy show at a
glance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from caopd_pl.files import atomic_write_json
from caopd_pl.metrics import answer_tensors, without_nan
from caopd_pl.plots import reliability_grid
from caopd_pl.readouts import ReadoutConfig, summaries_by_readout

SHOWN = ("accuracy", "mean_confidence", "ece", "spr", "format_adherence")
"""The rows of the comparison table, in order."""


def snapshot(records: Sequence[Mapping[str, Any]], readout: ReadoutConfig) -> dict[str, Any]:
    """What the comparison keeps of one evaluation: every readout's metrics and the primary readout's answers.

    Args:
        records: evaluation's answer records (their ``confidence`` is the primary readout's).
        readout: the readouts to summarise; its primary is the one the table and the figure show.

    Returns:
        ``{"readout", "n", "metrics": {readout: summary}, "confidence": [...], "correct": [...]}``: plain values, so
        it can live in a checkpoint and a JSON file.
    """
    confidence, correct, _ = answer_tensors(records)
    summaries = summaries_by_readout(records, readout.readouts)
    return {
        "readout": readout.primary,
        "n": len(records),
        "metrics": {name: without_nan(summary) for name, summary in summaries.items()},
        "confidence": confidence.tolist(),
        "correct": correct.tolist(),
    }


def table(before: Mapping[str, Any], after: Mapping[str, Any], prompts: str = "validation") -> str:
    """The two snapshots' primary-readout metrics side by side, a few lines for a terminal; ``prompts`` names the
    split they answered."""
    readout = before["readout"]
    lines = [f"before and after ({before['n']} {prompts} prompts, {readout} readout):", f"  {'':18}start   end"]
    for key in SHOWN:
        start, end = before["metrics"][readout].get(key), after["metrics"][readout].get(key)
        lines.append(f"  {key:18}{_cell(start)}   {_cell(end)}")
    return "\n".join(lines)


def write(before: Mapping[str, Any], after: Mapping[str, Any], folder: str | Path) -> list[str]:
    """``before_after.json`` (both snapshots) and ``before_after.png`` into ``folder``; returns their names."""
    folder = Path(folder)
    atomic_write_json(folder / "before_after.json", {"start": dict(before), "end": dict(after)})
    panels = {}
    for label, shot in (("start", before), ("end", after)):
        metrics = shot["metrics"][shot["readout"]]
        title = f"{label}: accuracy {_cell(metrics.get('accuracy'))}, ECE {_cell(metrics.get('ece'))}"
        panels[title] = (torch.tensor(shot["confidence"]), torch.tensor(shot["correct"], dtype=torch.bool))
    reliability_grid(panels, folder / "before_after.png")
    return ["before_after.json", "before_after.png"]


def _cell(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:.3f}"
