"""The RL baselines' rewards: RLVR's correctness, RLCR's correctness plus Brier score, the unparsed-confidence case,
and the registry that lets a config name a new one."""

import pytest

from caopd_pl.grpo import RLConfig
from caopd_pl.rewards import REWARDS, BrierReward, Correctness, Reward, make_reward


def test_rlvr_is_correctness_whatever_the_stated_confidence():
    reward = make_reward("rlvr")
    assert isinstance(reward, Correctness)
    assert [reward("Answer: 7\nConfidence: 0.10", True), reward("Answer: 7", True)] == [1.0, 1.0]
    assert [reward("Answer: 3\nConfidence: 1.00", False), reward("", False)] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("text", "correct", "expected"),
    [
        ("Answer: 7\nConfidence: 0.80", True, 1 - 0.2**2),  # 0.96
        ("Answer: 7\nConfidence: 0.80", False, 0 - 0.8**2),  # -0.64
        ("Answer: 7\nConfidence: 1.00", True, 1.0),  # the best there is
        ("Answer: 7\nConfidence: 1.00", False, -1.0),  # the worst a stated confidence gets
        ("Answer: 7\nConfidence: 0", False, 0.0),  # a wrong answer, said to be wrong
        ("Answer: 7\nConfidence: 30%", True, 1 - 0.7**2),  # read as evaluation reads it: 0.30
        ("Answer: 7\n**Confidence:** 0.5", False, -0.25),
        ("Confidence: 0.9\nAnswer: 7\nConfidence: 0.40", True, 1 - 0.6**2),  # the last value counts
    ],
)
def test_rlcr_is_correctness_minus_the_brier_score_of_the_stated_confidence(text, correct, expected):
    assert make_reward("rlcr")(text, correct) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "text", ["Answer: 7", "Answer: 7\nConfidence: high", "Answer: 7\nConfidence: nan", "Answer: 7\nConfidence:"]
)
def test_rlcr_scores_an_unparsed_confidence_below_every_stated_one_whatever_the_answer(text):
    reward = make_reward("rlcr")
    assert reward(text, True) == reward(text, False) == -2.0  # the reference's format failure
    worst_stated = reward("Answer: 7\nConfidence: 1.0", False)
    assert reward(text, True) < worst_stated == -1.0
    assert make_reward("rlcr", unparsed=-1.5)(text, True) == -1.5


def test_rlcr_refuses_an_unparsed_reward_that_would_pay_for_saying_nothing():
    with pytest.raises(ValueError, match=r"^data.rl.reward_options.unparsed must be <= -1 .*got -0.5$"):
        BrierReward(unparsed=-0.5)
    with pytest.raises(ValueError, match="data.rl.reward_options.unparsed"):
        make_reward("rlcr", unparsed=float("nan"))


def test_unknown_rewards_and_options_fail_in_one_line_naming_the_key():
    with pytest.raises(ValueError, match=r"^data.rl.reward='brier' is not a registered reward; choose one of \["):
        make_reward("brier")
    with pytest.raises(ValueError, match=r"^data.rl.reward_options: \['beta'\] are not parameters of the 'rlcr'"):
        RLConfig(reward="rlcr", reward_options={"beta": 1.0}).make_reward()
    with pytest.raises(ValueError, match=r"^data.rl.reward_options: \['unparsed'\] are not parameters of the 'rlvr'"):
        make_reward("rlvr", unparsed=-2.0)
    with pytest.raises(ValueError, match=r"^data.rl.passes must be >= 1, got 0$"):
        RLConfig(passes=0).make_reward()


def test_a_defined_reward_is_selected_by_name_with_its_options():
    class Hedged(Reward):
        name = "test_hedged"

        def __init__(self, floor: float = 0.5) -> None:
            self.floor = floor

        def __call__(self, text, correct):
            return float(correct) * max(self.floor, 0.0)

    try:
        reward = RLConfig(reward="test_hedged", reward_options={"floor": 0.25}).make_reward()
        assert isinstance(reward, Hedged) and reward("x", True) == 0.25 and reward("x", False) == 0.0
        with pytest.raises(TypeError, match="reward name 'test_hedged' of Other is taken by"):
            type("Other", (Reward,), {"name": "test_hedged", "__call__": lambda self, text, correct: 0.0})
        nameless = type("Nameless", (Reward,), {"__call__": lambda self, text, correct: 1.0})
        assert nameless not in REWARDS.values()  # not registered: its class path names it
    finally:
        REWARDS.remove("test_hedged")
    assert list(REWARDS) == ["rlvr", "rlcr"]
