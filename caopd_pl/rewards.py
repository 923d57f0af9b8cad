"""Rewards of the RL baselines: one class each, registered by name, scoring a completion and its verdict.

The RL methods (:mod:`caopd_pl.grpo`) score each of a prompt's K rollouts with a reward, then compare the scores
within the group. A reward sees the completion's text and the verifier's verdict (the verifier judges the text
before the confidence line, :mod:`caopd_pl.confidence`), never the reference: correctness is the verifier's job.

  * ``rlvr``: R = 1[correct], correctness only (RL with verifiable rewards; the RLCR paper's RLVR baseline, which
    it reports degrades calibration);
  * ``rlcr``: R = 1[correct] - (q - 1[correct])^2, q the stated confidence (Damani et al., 2025, "Beyond Binary
    Rewards"): correctness plus a Brier score, a bounded proper scoring rule, so the best policy answers correctly
    and states its probability of being right. A completion whose confidence cannot be parsed is scored as the
    RLCR reference code scores a format failure (see :class:`BrierReward`).

Adding one is defining one class; the definition registers it under its ``name`` (``data.rl.reward: hedged`` then
selects it, once the module defining it is imported; its class path selects it without a name,
:mod:`caopd_pl.registry`)::

    class Hedged(Reward):
        name = "hedged"

        def __call__(self, text, correct):  # half credit for a right answer stated below 0.5
            stated = parse_confidence(text)
            return float(correct) * (1.0 if stated.value >= 0.5 else 0.5)

Its constructor's parameters are filled from ``data.rl.reward_options`` entries of the same name. Pure Python: no
torch, no Lightning.
"""

from __future__ import annotations

import inspect
import math
from typing import ClassVar

from caopd_pl.confidence import parse_confidence
from caopd_pl.registry import Registry


class Reward:
    """The reward of one completion given the verifier's verdict on it.

    A subclass implements :meth:`__call__`; one that sets ``name`` is registered in :data:`REWARDS` under it. Extra
    parameters are constructor arguments, filled from ``data.rl.reward_options``.
    """

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        REWARDS.add_own_name(cls)

    def __call__(self, text: str, correct: bool) -> float:
        """The reward of ``text``, a completion the verifier judged ``correct``; a finite float."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement __call__(text, correct)")


def make_reward(kind: str | Reward, **options: float) -> Reward:
    """The registered reward ``kind``, built with ``options`` (every one must be a parameter of its constructor).

    Raises:
        ValueError: ``kind`` is not a registered name, an option is not one of its parameters, or out of range.
    """
    if isinstance(kind, Reward):
        return kind
    cls = REWARDS.resolve(kind)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"data.rl.reward_options: {unknown} are not parameters of the {kind!r} reward; it takes {list(accepted)}"
        )
    return cls(**options)


REWARDS: Registry[Reward] = Registry(Reward, "data.rl.reward", "reward")
"""Every :class:`Reward` subclass that sets a ``name``, by that name (the built-ins: ``rlvr``, ``rlcr``)."""


class Correctness(Reward):
    """RLVR: R = 1[correct]. The stated confidence is not read, so nothing trains it."""

    name = "rlvr"

    def __call__(self, text: str, correct: bool) -> float:
        return float(correct)


class BrierReward(Reward):
    """RLCR: R = 1[correct] - (q - 1[correct])^2, q the completion's stated confidence.

    A stated value is read as evaluation reads it (:func:`caopd_pl.confidence.parse_confidence`: the last
    ``Confidence:`` line, percentages divided by 100, clipped to [0, 1]). With one, R lies in [-1, 1].

    A completion with no parsable confidence (no ``Confidence:`` line, ``nan``, a word) gets ``unparsed``, by default
    -2, whatever its correctness: the RLCR reference code's format failure. Its total reward is 0.5 format + 0.5
    correctness + 0.5 (1 - Brier), with all three withheld when the format fails, i.e. 1 + R/2 for a well-formed
    completion and 0 for a malformed one, R = -2 in this scale. So a missing confidence scores below the worst stated
    one (a wrong answer at confidence 1, R = -1) and forfeits the correctness credit: never stating a confidence can
    not pay. Evaluation reads a missing confidence as 0 (and counts it in format adherence); scoring it as 0 here
    would make "no confidence line" the safe answer to a question the model expects to fail (R = 0, the best a wrong
    answer can get).

    Args:
        unparsed: the reward of a completion without a parsable confidence (``data.rl.reward_options.unparsed``);
            at most -1, the worst a stated confidence scores, so that stating one always pays.
    """

    name = "rlcr"

    def __init__(self, unparsed: float = -2.0) -> None:
        if not (math.isfinite(unparsed) and unparsed <= -1.0):
            raise ValueError(f"data.rl.reward_options.unparsed must be <= -1 (the worst stated), got {unparsed}")
        self.unparsed = unparsed

    def __call__(self, text: str, correct: bool) -> float:
        stated = parse_confidence(text)
        if not stated.parsed:
            return self.unparsed
        y = float(correct)
        return y - (stated.value - y) ** 2
