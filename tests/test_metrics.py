import math

import pytest
import torch

from caopd_pl.metrics import (
    METRIC_KEYS,
    answer_tensors,
    calibration_metrics,
    calibration_summary,
    confidence_bins,
    expected_calibration_error,
    without_nan,
)

CONF = torch.tensor([0.9, 0.8, 0.3, 0.3, 1.0])
CORRECT = torch.tensor([1, 0, 1, 0, 1])


def test_hand_computed_values():
    s = calibration_summary(CONF, CORRECT, torch.tensor([1, 1, 1, 0, 1]))
    assert s["n"] == 5
    assert s["accuracy"] == pytest.approx(0.6)
    assert s["mean_confidence"] == pytest.approx(0.66)
    assert s["ocg"] == pytest.approx(0.06)
    # Brier: (0.01 + 0.64 + 0.49 + 0.09 + 0) / 5
    assert s["brier"] == pytest.approx(1.23 / 5)
    # bins: 9 -> {0.9, 1.0} acc 1 (gap 0.1 total), 8 -> {0.8} acc 0 (0.8), 3 -> {0.3, 0.3} acc 0.5 (0.4)
    assert s["ece"] == pytest.approx((0.1 + 0.8 + 0.4) / 5)
    # pairs (pos, neg): pos {0.9, 0.3, 1.0} x neg {0.8, 0.3}: strictly greater 4 of 6, one tie
    assert s["spr"] == pytest.approx(4 / 6)
    assert s["auroc"] == pytest.approx(4.5 / 6)
    assert s["format_adherence"] == pytest.approx(0.8)


def test_constant_confidence_has_zero_spr_and_half_auroc():
    s = calibration_summary(torch.ones(6), torch.tensor([1, 0, 1, 1, 0, 0]))
    assert s["spr"] == 0.0
    assert s["auroc"] == 0.5
    assert s["ocg"] == pytest.approx(0.5)


def test_perfect_ranking_and_calibration():
    s = calibration_summary(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([1, 1, 0, 0]))
    assert s["spr"] == 1.0 and s["auroc"] == 1.0 and s["ece"] == 0.0 and s["brier"] == 0.0


def test_ranking_undefined_with_one_class():
    s = calibration_summary(torch.tensor([0.2, 0.7]), torch.tensor([1, 1]))
    assert math.isnan(s["spr"]) and math.isnan(s["auroc"])


def test_bins_put_stated_values_on_their_edge():
    bins = confidence_bins(torch.tensor([0.0, 0.1, 0.9, 0.95, 1.0], dtype=torch.float32))
    assert bins.tolist() == [0, 1, 9, 9, 9]
    assert expected_calibration_error(torch.tensor([0.05]), torch.tensor([0])) == pytest.approx(0.05)


def test_torchmetrics_collection_matches_functional_over_several_updates():
    metrics = calibration_metrics("val/")
    metrics.update(CONF[:2], CORRECT[:2], torch.ones(2))
    metrics.update(CONF[2:], CORRECT[2:], torch.ones(3))
    got = metrics.compute()
    want = calibration_summary(CONF, CORRECT)
    assert set(got) == {f"val/{k}" for k in METRIC_KEYS}
    for key in METRIC_KEYS:
        assert got[f"val/{key}"].item() == pytest.approx(want[key])


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        calibration_summary(torch.ones(3), torch.ones(2))


def test_answer_records_to_tensors_and_json_ready_summary():
    records = [{"confidence": 0.9, "correct": True, "parsed": True}, {"confidence": 0.2, "correct": True, "parsed": 0}]
    confidence, correct, parsed = answer_tensors(records)
    assert confidence.dtype == torch.float64 and confidence.tolist() == [0.9, 0.2]
    assert correct.tolist() == [1.0, 1.0] and parsed.tolist() == [1.0, 0.0]
    cleaned = without_nan(calibration_summary(confidence, correct, parsed))
    assert cleaned["spr"] is None and cleaned["auroc"] is None and cleaned["accuracy"] == 1.0
