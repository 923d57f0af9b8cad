"""Retention figures against hand-computed values."""

import pytest

from caopd_pl.continual.metrics import retention_figures

# Rows: base, after stage 1, 2, 3. Columns: tasks 1-3 (trainable), then one held-out task.
ACCURACY = [
    [0.2, 0.1, 0.3, 0.5],
    [0.8, 0.2, 0.3, 0.4],
    [0.6, 0.9, 0.4, 0.45],
    [0.5, 0.7, 0.9, 0.3],
]
ECE = [
    [0.5, 0.6, 0.4, 0.3],
    [0.1, 0.5, 0.4, 0.35],
    [0.2, 0.05, 0.3, 0.3],
    [0.3, 0.15, 0.1, 0.4],
]


def test_figures_match_their_definitions():
    got = retention_figures(ACCURACY, ECE, num_trainable=3)
    expected = {
        "final_accuracy": (0.5 + 0.7 + 0.9) / 3,
        "final_ece": (0.3 + 0.15 + 0.1) / 3,
        "backward_transfer": ((0.5 - 0.8) + (0.7 - 0.9)) / 2,
        "forgetting": ((0.8 - 0.5) + (0.9 - 0.7)) / 2,
        "calibration_forgetting": ((0.3 - 0.1) + (0.15 - 0.05)) / 2,
        "ece_backward_transfer": ((0.3 - 0.1) + (0.15 - 0.05)) / 2,
        "forward_transfer": ((0.2 - 0.1) + (0.4 - 0.3)) / 2,
        "ece_forward_transfer": ((0.5 - 0.6) + (0.3 - 0.4)) / 2,
        "held_out_accuracy": 0.3,
        "held_out_ece": 0.4,
        "held_out_accuracy_change": 0.3 - 0.5,
        "held_out_ece_change": 0.4 - 0.3,
    }
    assert got == pytest.approx(expected)


def test_forgetting_uses_the_best_value_since_training_not_the_base():
    # Task 1 peaks at the base (0.9), before it is trained: not counted. Task 2 improves after its stage: negative.
    accuracy = [[0.9, 0.0, 0.0], [0.5, 0.0, 0.0], [0.7, 0.1, 0.0], [0.4, 0.2, 0.5]]
    ece = [[0.0] * 3] * 4
    figures = retention_figures(accuracy, ece, num_trainable=3)
    assert figures["forgetting"] == pytest.approx(((0.7 - 0.4) + (0.1 - 0.2)) / 2)
    assert figures["held_out_accuracy"] is None


def test_single_stage_and_missing_cells_give_none():
    figures = retention_figures([[0.1, None], [0.5, None]], [[0.2, None], [0.3, None]], num_trainable=1)
    assert figures["final_accuracy"] == pytest.approx(0.5)
    assert figures["backward_transfer"] is None and figures["forward_transfer"] is None
    assert figures["held_out_accuracy"] is None


def test_wrong_row_count_is_rejected():
    with pytest.raises(ValueError, match="T \\+ 1"):
        retention_figures([[0.1]], [[0.1]], num_trainable=1)
