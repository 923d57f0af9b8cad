"""Estimating a prompt's success rate from its K verified rollouts: the target confidence of CaOPD.

``empirical`` is the paper's P_acc = #correct / K. With K = 8 its standard error reaches 0.18, so ``beta`` offers
the posterior mean under a Beta(alpha, beta) prior: (#correct + alpha) / (K + alpha + beta), which shrinks extreme
estimates towards the prior mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EstimatorConfig:
    """How P_acc is estimated from K verdicts."""

    kind: Literal["empirical", "beta"] = "empirical"
    """``empirical`` (#correct / K, the paper) or ``beta`` (posterior mean under a Beta prior)."""
    prior_alpha: float = 1.0
    """Beta prior's pseudo-count of successes."""
    prior_beta: float = 1.0
    """Beta prior's pseudo-count of failures."""

    def __post_init__(self) -> None:
        if self.prior_alpha <= 0 or self.prior_beta <= 0:
            raise ValueError(f"estimator priors must be > 0, got alpha={self.prior_alpha}, beta={self.prior_beta}")


def estimate_success_rate(num_correct: int, num_samples: int, config: EstimatorConfig) -> float:
    """The estimated probability that a rollout of this prompt is correct, in [0, 1]."""
    if not 0 <= num_correct <= num_samples or num_samples < 1:
        raise ValueError(f"need 0 <= num_correct <= num_samples and num_samples >= 1, got {num_correct}/{num_samples}")
    if config.kind == "empirical":
        return num_correct / num_samples
    return (num_correct + config.prior_alpha) / (num_samples + config.prior_alpha + config.prior_beta)
