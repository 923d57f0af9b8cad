"""The compared methods by name: what to lay over a fit config to train each one from the same warm start.

Every method samples the same prompts x K rollouts per epoch from its current student, with the same engine, seeds
and verifier (``data.prompts_per_epoch``, ``data.rollout``, ``trainer.max_epochs`` of the config); only what it
learns from them differs:

  * ``sdft``: self-distillation from the teacher with the golden demonstration, no confidence revision (the paper's
    baseline, ``data.calibration: none``);
  * ``caopd``: the same with every target confidence replaced by the empirical one (``data.calibration: empirical``);
  * ``rlvr``: GRPO with the correctness reward (:mod:`caopd_pl.grpo`, :mod:`caopd_pl.rewards`);
  * ``rlcr``: GRPO with correctness plus the Brier score of the stated confidence.

``base``, the warm start itself, trains nothing and has no entry. The benchmarks (``benchmarks/miscalibration.py``,
``benchmarks/real_model.py``) take these names in ``--methods``.
"""

from __future__ import annotations

from typing import Any

METHODS: dict[str, dict[str, Any]] = {
    "sdft": {"data": {"calibration": "none", "rl": None}},
    "caopd": {"data": {"calibration": "empirical", "rl": None}},
    "rlvr": {"data": {"rl": {"reward": "rlvr"}}},
    "rlcr": {"data": {"rl": {"reward": "rlcr"}}},
}
"""{method: the override (a nested mapping, as :func:`caopd_pl.pipeline.build` takes) that makes a config train it}."""


def method_override(name: str) -> dict[str, Any]:
    """The override of method ``name``.

    Raises:
        ValueError: ``name`` is not a method (the message lists them).
    """
    if name not in METHODS:
        raise ValueError(f"method {name!r} is not one of {list(METHODS)} (base trains nothing)")
    return METHODS[name]
