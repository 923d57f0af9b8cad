"""Figures written beside the numbers: reliability diagrams and confidence-versus-accuracy plots."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import IO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from caopd_pl.files import atomic_write  # noqa: E402
from caopd_pl.metrics import confidence_bins, expected_calibration_error  # noqa: E402


def _bin_stats(confidence: torch.Tensor, correct: torch.Tensor, num_bins: int):
    bins = confidence_bins(confidence, num_bins)
    count = torch.bincount(bins, minlength=num_bins).double()
    acc = torch.bincount(bins, weights=correct.double(), minlength=num_bins) / count.clamp_min(1)
    conf = torch.bincount(bins, weights=confidence.double(), minlength=num_bins) / count.clamp_min(1)
    return count, acc, conf


def draw_reliability(ax, confidence: torch.Tensor, correct: torch.Tensor, title: str = "", num_bins: int = 10):
    """One reliability diagram on ``ax``: accuracy per confidence bin against the diagonal, with the panel's ECE,
    accuracy, mean confidence and count in its lower right corner (every panel of a grid carries its own)."""
    count, acc, conf = _bin_stats(confidence, correct, num_bins)
    centers = (torch.arange(num_bins, dtype=torch.float64) + 0.5) / num_bins
    filled = count > 0
    ax.bar(centers[filled], acc[filled], width=1 / num_bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.scatter(conf[filled], acc[filled], color="crimson", zorder=3, s=12, label="bin mean confidence")
    for x, n in zip(centers[filled].tolist(), count[filled].tolist()):
        ax.text(x, 0.02, str(int(n)), ha="center", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="stated confidence", ylabel="accuracy", title=title)
    ax.legend(loc="upper left", fontsize=7)
    if len(confidence):
        ece = float(expected_calibration_error(confidence, correct, num_bins))
        stats = (
            f"ECE {ece:.3f}\naccuracy {float(correct.double().mean()):.3f}\n"
            f"confidence {float(confidence.double().mean()):.3f}\nn {len(confidence)}"
        )
        box = {"boxstyle": "round", "facecolor": "white", "alpha": 0.85}
        ax.text(0.97, 0.1, stats, transform=ax.transAxes, ha="right", va="bottom", fontsize=8, bbox=box)


def reliability_diagram(
    confidence: torch.Tensor,
    correct: torch.Tensor,
    path: str | Path | IO[bytes],
    title: str = "",
    num_bins: int = 10,
) -> None:
    """Write a reliability diagram PNG (bin counts printed along the bottom) to a path or a binary file."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    draw_reliability(ax, confidence, correct, title, num_bins)
    save_figure(fig, path)


def reliability_grid(results: Mapping[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path) -> None:
    """One reliability diagram per named (confidence, correct) pair, side by side."""
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 4.5), squeeze=False)
    for ax, (name, (confidence, correct)) in zip(axes[0], results.items()):
        draw_reliability(ax, confidence, correct, title=name)
    save_figure(fig, path)


def save_figure(fig, path: str | Path | IO[bytes]) -> None:
    """Write ``fig`` and close it: as a PNG to a binary file, or atomically to a path (parents created; the format
    its suffix names), so that a full disk leaves the old figure, not a torn one."""
    fig.tight_layout()
    try:
        if isinstance(path, (str, Path)):
            form = Path(path).suffix.lstrip(".") or "png"
            atomic_write(Path(path), lambda file: fig.savefig(file, format=form, dpi=120))
        else:
            fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)


def confidence_vs_accuracy(points: Mapping[str, Mapping[str, tuple[float, float]]], path: str | Path) -> None:
    """Mean confidence against accuracy, a colour per method and a marker per readout, with the diagonal (the paper's
    Figure 1, with every confidence readout of :mod:`caopd_pl.readouts`).

    Args:
        points: {method: {readout: (accuracy, mean confidence)}}.
        path: the PNG to write.
    """
    markers = ("o", "s", "^", "D", "v")
    readouts = list(dict.fromkeys(r for by_readout in points.values() for r in by_readout))
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    ax.plot([0, 1], [0, 1], "--", color="gray", label="calibrated")
    for index, (method, by_readout) in enumerate(points.items()):
        color = f"C{index}"
        for readout, (accuracy, confidence) in by_readout.items():
            marker = markers[readouts.index(readout) % len(markers)]
            # Later readouts drawn smaller, so coinciding points stay visible.
            size = 90 - 25 * readouts.index(readout)
            ax.scatter([accuracy], [confidence], s=max(size, 20), zorder=3, color=color, marker=marker, edgecolor="k")
        accuracy, confidence = next(iter(by_readout.values()))
        # Labels stepped down by method, so methods at the same point stay readable.
        offset = (10, 4 - 12 * index)
        ax.annotate(method, (accuracy, confidence), textcoords="offset points", xytext=offset, color=color)
    for readout in readouts:  # legend entries for the markers, in gray
        ax.scatter([], [], color="gray", marker=markers[readouts.index(readout) % len(markers)], label=readout)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="accuracy", ylabel="mean confidence")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def reliability_matrix(
    results: Mapping[str, Mapping[str, tuple[torch.Tensor, torch.Tensor]]], path: str | Path
) -> None:
    """Reliability diagrams in a grid: a row per outer key (method), a column per inner key (readout)."""
    rows = list(results)
    columns = list(dict.fromkeys(c for inner in results.values() for c in inner))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(4.0 * len(columns), 4.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, column in enumerate(columns):
            if column in results[row]:
                confidence, correct = results[row][column]
                draw_reliability(axes[r][c], confidence, correct, title=f"{row}, {column}")
            else:
                axes[r][c].axis("off")
    save_figure(fig, path)
