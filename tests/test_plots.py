"""Every reliability panel carries its own ECE, accuracy, confidence and count (issue 25: grid panels had none)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from caopd_pl.metrics import expected_calibration_error
from caopd_pl.plots import draw_reliability, reliability_grid


def _panel_text(ax) -> str:
    return "\n".join(text.get_text() for text in ax.texts)


def test_each_reliability_panel_states_its_own_ece(tmp_path):
    confidence = torch.tensor([0.9, 0.8, 0.2, 0.1, 0.95, 0.6])
    correct = torch.tensor([1, 0, 0, 0, 1, 1])
    fig, ax = plt.subplots()
    draw_reliability(ax, confidence, correct, title="greedy")
    ece = float(expected_calibration_error(confidence, correct))
    text = _panel_text(ax)
    plt.close(fig)
    assert f"ECE {ece:.3f}" in text and "accuracy 0.500" in text and "n 6" in text

    overconfident = torch.ones(6)
    reliability_grid({"a": (confidence, correct), "b": (overconfident, correct)}, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 1000
    fig, axes = plt.subplots(1, 2)
    for ax, conf in zip(axes, (confidence, overconfident)):
        draw_reliability(ax, conf, correct)
    texts = [_panel_text(ax) for ax in axes]
    plt.close(fig)
    assert "ECE 0.500" in texts[1] and texts[0] != texts[1]  # each panel its own figure, not the first's
