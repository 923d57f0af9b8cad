"""Figures of a continual run: metric heatmaps (stage x task) and per-task curves across stages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from caopd_pl.plots import save_figure  # noqa: E402

Matrix = Sequence[Sequence[float | None]]
CELL_FONT_SIZE = 12
"""Points of a heatmap's cell labels: readable at the figure's own size (cells are about an inch wide)."""
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
"""One marker per task of the curves, so that tasks with equal values stay apart."""
DODGE = 0.06
"""Horizontal step between the tasks' curves, in stages: identical curves are drawn side by side, not on top."""


def _nan(matrix: Matrix) -> list[list[float]]:
    return [[math.nan if v is None else float(v) for v in row] for row in matrix]


def draw_heatmap(
    ax, matrix: Matrix, rows: Sequence[str], columns: Sequence[str], title: str, num_trainable: int, cmap: str
):
    """A stage x task heatmap on ``ax`` with the value in each cell; a white line before the held-out tasks."""
    values = _nan(matrix)
    image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            text = "n/a" if math.isnan(value) else f"{value:.2f}"
            shade = plt.get_cmap(cmap)(0.0 if math.isnan(value) else value)
            dark = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=CELL_FONT_SIZE, color="white" if dark else "black")
    if num_trainable < len(columns):
        ax.axvline(num_trainable - 0.5, color="white", linewidth=3)
    ax.set_xticks(range(len(columns)), [f"{c}\n(held out)" if j >= num_trainable else c for j, c in enumerate(columns)])
    ax.set_yticks(range(len(rows)), [r if i == 0 else f"after {r}" for i, r in enumerate(rows)])
    ax.set(xlabel="evaluated task", ylabel="model", title=title)
    ax.figure.colorbar(image, ax=ax, fraction=0.04)


def matrix_heatmap(
    matrix: Matrix,
    rows: Sequence[str],
    columns: Sequence[str],
    path: str | Path,
    title: str,
    num_trainable: int,
    cmap: str = "viridis",
) -> None:
    """Write one stage x task heatmap PNG.

    Args:
        matrix: (len(rows), len(columns)) values; None is drawn blank.
        rows: row labels (``base``, then the stages).
        columns: column labels (trainable tasks, then held-out ones).
        path: PNG to write.
        title: figure title.
        num_trainable: how many leading columns are trainable tasks.
        cmap: matplotlib colour map.
    """
    fig, ax = plt.subplots(figsize=(1.1 * len(columns) + 2.5, 0.6 * len(rows) + 1.8))
    draw_heatmap(ax, matrix, rows, columns, title, num_trainable, cmap)
    save_figure(fig, path)


def task_curves(
    matrices: dict[str, Matrix], rows: Sequence[str], columns: Sequence[str], path: str | Path, num_trainable: int
) -> None:
    """One panel per metric: each task's value across stages (held-out tasks dashed); each task has its own marker and
    is shifted sideways by :data:`DODGE`, so that tasks with the same values stay visible side by side.

    Args:
        matrices: metric name -> (len(rows), len(columns)) matrix.
        rows: stage labels (x axis).
        columns: task names (one line each).
        path: PNG to write.
        num_trainable: how many leading columns are trainable tasks.
    """
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.8 * len(matrices), 4.0), squeeze=False)
    for ax, (metric, matrix) in zip(axes[0], matrices.items()):
        values = _nan(matrix)
        for j, task in enumerate(columns):
            style = "--" if j >= num_trainable else "-"
            label = f"{task} (held out)" if j >= num_trainable else task
            x = [stage + DODGE * (j - (len(columns) - 1) / 2) for stage in range(len(rows))]
            ax.plot(x, [row[j] for row in values], style, marker=MARKERS[j % len(MARKERS)], label=label, alpha=0.85)
        ax.set_xticks(range(len(rows)), rows, rotation=30)
        ax.set(xlabel="after stage", ylabel=metric, title=metric, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def comparison_heatmaps(summaries: dict[str, dict], path: str | Path) -> None:
    """Accuracy and ECE heatmaps of every calibration's summary, one row of panels per calibration."""
    fig, axes = plt.subplots(len(summaries), 2, figsize=(2 * (1.1 * 6 + 2.5), 4.0 * len(summaries)), squeeze=False)
    for row, (calibration, summary) in enumerate(summaries.items()):
        for col, (key, cmap) in enumerate((("accuracy", "viridis"), ("ece", "magma_r"))):
            draw_heatmap(
                axes[row][col],
                summary["matrices"][key],
                summary["stages"],
                summary["tasks"],
                f"{key} (calibration: {calibration})",
                len(summary["trainable_tasks"]),
                cmap,
            )
    save_figure(fig, path)
