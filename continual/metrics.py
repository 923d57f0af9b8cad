"""Retention figures of a continual run, from its matrices, in pure Python.

Notation: T trainable tasks trained in order 1..T; row i of a matrix is the model after stage i, row 0 the model
before stage 1 (the warm start, "base"); R[i][j] is accuracy and E[i][j] ECE after stage i on task j. Held-out
tasks (never trained) are further columns h. With T = 1 the figures that need an earlier task are None.

- final_accuracy = mean_j R[T][j] over trainable j; final_ece likewise with E (lower is better).
- backward_transfer (BWT, Lopez-Paz & Ranzato 2017) = mean_{j<T} (R[T][j] - R[j][j]): negative = forgetting.
- forgetting (Chaudhry et al. 2018) = mean_{j<T} (max_{j<=l<T} R[l][j] - R[T][j]): the drop of each earlier task
  from its best accuracy since it was trained.
- calibration_forgetting = mean_{j<T} (E[T][j] - min_{j<=l<T} E[l][j]): the rise of each earlier task's ECE from
  its best (lowest) since it was trained; positive = calibration lost.
- ece_backward_transfer = mean_{j<T} (E[T][j] - E[j][j]): the ECE analogue of BWT (positive = worse).
- forward_transfer (FWT, Lopez-Paz & Ranzato, with the warm start as the baseline) = mean_{j>1} (R[j-1][j] -
  R[0][j]): what training on tasks 1..j-1 did to task j before task j was trained.
- ece_forward_transfer = mean_{j>1} (E[j-1][j] - E[0][j]): the same for ECE (positive = worse).
- held_out_accuracy / held_out_ece = mean_h R[T][h] / E[T][h]; held_out_accuracy_change / held_out_ece_change
  = mean_h (R[T][h] - R[0][h]) / (E[T][h] - E[0][h]): out-of-distribution transfer of the whole sequence.

A cell that is None (e.g. SPR with all answers wrong) is left out of its mean; a mean of nothing is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]

MATRIX_METRICS = ("accuracy", "ece", "brier", "ocg", "spr", "mean_confidence")


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _best_since(matrix: Matrix, j: int, last: int, pick) -> float | None:
    # Best value of task j over rows j..last-1 (1-based task j was trained at row j).
    values = [matrix[row][j - 1] for row in range(j, last)]
    values = [v for v in values if v is not None]
    return pick(values) if values else None


def retention_figures(accuracy: Matrix, ece: Matrix, num_trainable: int) -> dict[str, float | None]:
    """The derived figures of the module docstring.

    Args:
        accuracy: (T + 1) x (T + H) accuracy matrix, row 0 the warm start.
        ece: the ECE matrix of the same shape.
        num_trainable: T; columns past T are held-out tasks.

    Returns:
        Figure name -> value (None where undefined).
    """
    T = num_trainable
    if len(accuracy) != T + 1 or len(ece) != T + 1:
        raise ValueError(f"matrices need T + 1 = {T + 1} rows (warm start + stages), got {len(accuracy)}, {len(ece)}")
    earlier, later, held = range(1, T), range(2, T + 1), range(T, len(accuracy[0]))
    return {
        "final_accuracy": _mean([accuracy[T][j] for j in range(T)]),
        "final_ece": _mean([ece[T][j] for j in range(T)]),
        "backward_transfer": _mean([_diff(accuracy[T][j - 1], accuracy[j][j - 1]) for j in earlier]),
        "forgetting": _mean([_diff(_best_since(accuracy, j, T, max), accuracy[T][j - 1]) for j in earlier]),
        "calibration_forgetting": _mean([_diff(ece[T][j - 1], _best_since(ece, j, T, min)) for j in earlier]),
        "ece_backward_transfer": _mean([_diff(ece[T][j - 1], ece[j][j - 1]) for j in earlier]),
        "forward_transfer": _mean([_diff(accuracy[j - 1][j - 1], accuracy[0][j - 1]) for j in later]),
        "ece_forward_transfer": _mean([_diff(ece[j - 1][j - 1], ece[0][j - 1]) for j in later]),
        "held_out_accuracy": _mean([accuracy[T][h] for h in held]),
        "held_out_ece": _mean([ece[T][h] for h in held]),
        "held_out_accuracy_change": _mean([_diff(accuracy[T][h], accuracy[0][h]) for h in held]),
        "held_out_ece_change": _mean([_diff(ece[T][h], ece[0][h]) for h in held]),
    }
