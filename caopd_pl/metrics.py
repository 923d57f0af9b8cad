"""Calibration metrics in pure torch, and torchmetrics wrappers that accumulate them across steps and ranks.

For N answers with correctness y in {0, 1} and stated confidence c in [0, 1] (0 when none was parsed):
  * accuracy = mean(y); mean_confidence = mean(c); ocg (overconfidence gap) = mean(c) - mean(y);
  * brier = mean((c - y)^2);
  * ece = sum over 10 equal-width bins b of |B_b| / N * |mean c in b - mean y in b| (see :func:`confidence_bins`);
  * spr (strict pairwise ranking) = P(c+ > c-) over all (correct, incorrect) pairs, ties count 0;
  * auroc = P(c+ > c-) + 0.5 * P(c+ = c-);
  * format_adherence = share of answers with a parseable confidence.
spr and auroc are NaN when all answers are correct or all are wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

METRIC_KEYS = ("accuracy", "mean_confidence", "ece", "brier", "spr", "ocg", "auroc", "format_adherence")


def confidence_bins(confidence: torch.Tensor, num_bins: int = 10) -> torch.Tensor:
    """Bin index of each confidence: bin k holds [k / num_bins, (k + 1) / num_bins), and 1.0 the last bin.

    Values within 1e-6 below an edge count as on it, so that a stated ``0.90`` stored in float32
    (0.89999998) lands in the bin of 0.9 whatever the dtype.
    """
    return (confidence.double() * num_bins + 1e-6).floor().clamp(0, num_bins - 1).long()


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, num_bins: int = 10) -> torch.Tensor:
    """ECE with ``num_bins`` equal-width bins."""
    confidence, correct = confidence.double(), correct.double()
    bins = confidence_bins(confidence, num_bins)  # (N,)
    conf_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, confidence)
    acc_sum = torch.zeros(num_bins, dtype=torch.float64).index_add_(0, bins, correct)
    return (conf_sum - acc_sum).abs().sum() / max(confidence.numel(), 1)


def pairwise_ranking(confidence: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P(c+ > c-), P(c+ = c-)) over all (correct, incorrect) pairs; NaN when either side is empty."""
    positives = confidence[correct.bool()].double().sort().values  # (P,)
    negatives = confidence[~correct.bool()].double()  # (Q,)
    pairs = positives.numel() * negatives.numel()
    if pairs == 0:
        nan = torch.tensor(math.nan, dtype=torch.float64)
        return nan, nan
    above = positives.numel() - torch.searchsorted(positives, negatives, right=True)  # positives > each negative
    at_or_above = positives.numel() - torch.searchsorted(positives, negatives, right=False)
    greater = above.sum().double() / pairs
    ties = (at_or_above - above).sum().double() / pairs
    return greater, ties


def calibration_summary(
    confidence: torch.Tensor, correct: torch.Tensor, parsed: torch.Tensor | None = None, num_bins: int = 10
) -> dict[str, float]:
    """Every metric of this module for one set of answers, plus ``n``.

    Args:
        confidence: (N,) stated confidence in [0, 1], 0 where unparsed.
        correct: (N,) bool or {0, 1} correctness.
        parsed: (N,) bool, whether a confidence was parsed; all True when omitted.
        num_bins: ECE bins.
    """
    confidence = confidence.double().flatten()
    correct = correct.double().flatten()
    if confidence.shape != correct.shape:
        raise ValueError(f"confidence {tuple(confidence.shape)} and correct {tuple(correct.shape)} differ in shape")
    if confidence.numel() == 0:
        return {**{key: math.nan for key in METRIC_KEYS}, "n": 0}
    parsed = torch.ones_like(correct) if parsed is None else parsed.double().flatten()
    greater, ties = pairwise_ranking(confidence, correct)
    summary = {
        "accuracy": correct.mean(),
        "mean_confidence": confidence.mean(),
        "ece": expected_calibration_error(confidence, correct, num_bins),
        "brier": ((confidence - correct) ** 2).mean(),
        "spr": greater,
        "ocg": confidence.mean() - correct.mean(),
        "auroc": greater + 0.5 * ties,
        "format_adherence": parsed.mean(),
    }
    return {**{key: float(value) for key, value in summary.items()}, "n": int(confidence.numel())}


def answer_tensors(records: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(confidence, correct, parsed) float64 tensors from answer records (dicts with those keys)."""
    return tuple(  # type: ignore[return-value]
        torch.tensor([float(r[key]) for r in records], dtype=torch.float64)
        for key in ("confidence", "correct", "parsed")
    )


def without_nan(summary: Mapping[str, float]) -> dict[str, float | None]:
    """``summary`` with NaN (undefined SPR/AUROC) as None, which JSON writes as null."""
    return {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in summary.items()}


class CalibrationMetric(Metric):
    """Accumulates (confidence, correct, parsed) and computes one metric of :func:`calibration_summary`.

    All instances share their state layout, so a :class:`MetricCollection` of them keeps one copy (compute groups).
    """

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, key: str, num_bins: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if key not in METRIC_KEYS:
            raise ValueError(f"unknown calibration metric {key!r}; choose from {METRIC_KEYS}")
        self.key, self.num_bins = key, num_bins
        self.add_state("confidence", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")
        self.add_state("parsed", default=[], dist_reduce_fx="cat")

    def update(self, confidence: torch.Tensor, correct: torch.Tensor, parsed: torch.Tensor) -> None:
        self.confidence.append(confidence.double().flatten())
        self.correct.append(correct.double().flatten())
        self.parsed.append(parsed.double().flatten())

    def compute(self) -> torch.Tensor:
        # After a distributed sync the list states arrive concatenated into one tensor.
        if isinstance(self.confidence, list) and not self.confidence:
            return torch.tensor(math.nan)
        conf, correct, parsed = (dim_zero_cat(s) for s in (self.confidence, self.correct, self.parsed))
        return torch.tensor(calibration_summary(conf, correct, parsed, self.num_bins)[self.key])


def calibration_metrics(prefix: str = "") -> MetricCollection:
    """A collection of every calibration metric, logged as ``{prefix}{key}``."""
    return MetricCollection({key: CalibrationMetric(key) for key in METRIC_KEYS}, prefix=prefix)
