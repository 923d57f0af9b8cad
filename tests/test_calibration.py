import pytest

from caopd_pl.calibration import EstimatorConfig, estimate_success_rate


def test_empirical_is_share_correct():
    assert estimate_success_rate(3, 8, EstimatorConfig()) == 3 / 8


def test_beta_posterior_mean_shrinks_extremes():
    config = EstimatorConfig(kind="beta", prior_alpha=1.0, prior_beta=1.0)
    assert estimate_success_rate(0, 8, config) == pytest.approx(1 / 10)
    assert estimate_success_rate(8, 8, config) == pytest.approx(9 / 10)
    assert estimate_success_rate(4, 8, config) == pytest.approx(0.5)


def test_bad_input_raises():
    with pytest.raises(ValueError):
        estimate_success_rate(9, 8, EstimatorConfig())
    with pytest.raises(ValueError, match="priors"):
        EstimatorConfig(kind="beta", prior_alpha=0.0)
