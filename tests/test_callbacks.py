"""The end-of-fit summary (caopd_pl.callbacks.fit_summary): format adherence beside the calibration metrics."""

from types import SimpleNamespace

import torch

from caopd_pl.callbacks import fit_summary


def _trainer(**validation: float) -> SimpleNamespace:
    metrics = {f"val/{key}": torch.tensor(value) for key, value in validation.items()}
    return SimpleNamespace(current_epoch=1, global_step=8, callbacks=[], callback_metrics=metrics)


def test_a_model_that_states_no_confidence_does_not_read_as_calibrated():
    # The case a new user met: "accuracy 0.000, mean_confidence 0.000, ece 0.000" after a run that stated nothing.
    summary = fit_summary(_trainer(accuracy=0.0, mean_confidence=0.0, ece=0.0, format_adherence=0.0), None, 241.0)
    assert "last validation: accuracy 0.000, mean_confidence 0.000, ece 0.000, format_adherence 0.000" in summary
    assert "only 0% of the answers state a confidence; the others read 0" in summary


def test_a_model_that_states_its_confidence_gets_no_warning():
    summary = fit_summary(_trainer(accuracy=0.4, mean_confidence=0.5, ece=0.1, format_adherence=0.97), None, 10.0)
    assert "format_adherence 0.970" in summary and "state a confidence" not in summary
