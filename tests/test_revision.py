"""The method's core on plain data: hand-written rollouts and verdicts in, distillation examples out (no model, no
engine, no Lightning)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from caopd_pl.calibration import EstimatorConfig
from caopd_pl.revision import (
    DEMONSTRATION,
    RevisionSettings,
    evidence_for,
    next_correct,
    revise_epoch,
    revise_group,
)
from caopd_pl.rollout.base import Rollout
from caopd_pl.tasks.base import TaskExample
from caopd_pl.templates import TeacherConfig, prompt_ids

EXAMPLE = TaskExample([{"role": "user", "content": "Q: 2+1=?"}], reference=3, demonstration="2+1=3\nAnswer: 3", id="q")

# Four rollouts, two of them correct (the first and the third), told apart by their first line.
GROUP = [
    "first\nAnswer: 3\nConfidence: 0.3",
    "second\nAnswer: 0\nConfidence: 0.1",
    "third\nAnswer: 3\nConfidence: 0.6",
    "fourth\nAnswer: 5\nConfidence: 0.2",
]
GROUP_CORRECT = [True, False, True, False]


def rollouts(tokenizer, texts: list[str]) -> list[Rollout]:
    """What an engine returns for ``texts``: their tokens and EOS, finished."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    return [Rollout(i, text, True) for i, text in zip(ids, texts)]


def revise(tokenizer, texts, correct, example=EXAMPLE, **settings):
    student_prompt = prompt_ids(tokenizer, example.student_messages())
    group = rollouts(tokenizer, texts)
    return revise_group(tokenizer, example, student_prompt, group, correct, RevisionSettings(**settings))


def evidence_of(tokenizer, example) -> str | None:
    """The evidence the teacher prompt shows: ``demo``, or the first line of the correct rollout."""
    teacher = tokenizer.decode(example.teacher_prompt)
    if "Correct solution:\n" not in teacher:
        return "demo" if "This is an example for a response to the question:" in teacher else None
    return teacher.split("Correct solution:\n", 1)[1].split("\n", 1)[0]


def test_revision_imports_no_torch():
    # The method's core runs where torch is not (a verification or analysis job) and is tested without it.
    code = "import sys, caopd_pl.revision, caopd_pl.calibration; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_empirical_revision_states_p_acc_in_completion_teacher_and_note(tokenizer):
    texts = ["Answer: 3\nConfidence: 1.00", "Answer: 5\nConfidence: 0.90"] * 2
    examples = revise(tokenizer, texts, [True, False, True, False])
    assert len(examples) == 4 and all(e.p_acc == 0.5 for e in examples)
    assert tokenizer.decode(examples[0].completion) == "Answer: 3\nConfidence: 0.50<|im_end|>"
    assert tokenizer.decode(examples[1].completion) == "Answer: 5\nConfidence: 0.50<|im_end|>"
    teacher = tokenizer.decode(examples[0].teacher_prompt)
    assert "This is an example for a response to the question:\n2+1=3\nAnswer: 3\nConfidence: 0.50" in teacher
    assert "empirical confidence for this question is 0.50" in teacher
    assert all(e.teacher_prompt == examples[0].teacher_prompt for e in examples)  # one demonstration, one prompt
    assert examples[0].student_prompt == prompt_ids(tokenizer, EXAMPLE.student_messages())


def test_none_keeps_the_sampled_tokens_and_the_demos_own_confidence(tokenizer):
    texts = ["Answer: 3\nConfidence: 0.90"] * 2
    (first, _) = revise(tokenizer, texts, [True, True], calibration="none")
    assert first.completion == rollouts(tokenizer, texts)[0].token_ids
    teacher = tokenizer.decode(first.teacher_prompt)
    assert "Confidence: 1.00" in teacher and "empirical confidence" not in teacher


def test_the_estimator_sets_p_acc(tokenizer):
    estimator = EstimatorConfig(kind="beta", prior_alpha=1.0, prior_beta=1.0)
    examples = revise(tokenizer, ["Answer: 3", "Answer: 0"], [True, False], estimator=estimator)
    assert [e.p_acc for e in examples] == [0.5, 0.5]  # (1 + 1) / (2 + 2)
    examples = revise(tokenizer, ["Answer: 3", "Answer: 3"], [True, True], estimator=estimator)
    assert examples[0].p_acc == 0.75 and tokenizer.decode(examples[0].completion).endswith("Confidence: 0.75<|im_end|>")


@pytest.mark.parametrize("calibration", ["empirical", "none"])
def test_correct_solution_never_shows_a_completion_its_own_text(tokenizer, calibration):
    teacher = TeacherConfig(template="correct_solution")
    examples = revise(tokenizer, GROUP, GROUP_CORRECT, teacher=teacher, calibration=calibration)
    assert [evidence_of(tokenizer, e) for e in examples] == ["third", "third", "first", "first"]
    teachers = [tokenizer.decode(e.teacher_prompt) for e in examples]
    if calibration == "none":  # each evidence keeps the confidence it stated; the sampled tokens are kept
        assert "Confidence: 0.60" in teachers[0] and "Confidence: 0.30" in teachers[2]
        assert [tokenizer.decode(e.completion) for e in examples] == [t + "<|im_end|>" for t in GROUP]
    else:
        assert all("Correct solution:\n" in t and "Confidence: 0.50" in t for t in teachers)


# "third" (correct) then "second" (wrong): "second" sees "third"; "third" never sees its own text.
@pytest.mark.parametrize("fallback, expected", [("demo", ["demo", "third"]), ("skip", ["third"])])
def test_the_lone_correct_rollout_falls_back_or_is_dropped(tokenizer, fallback, expected):
    teacher = TeacherConfig(template="correct_solution", no_correct_rollout=fallback)
    examples = revise(tokenizer, [GROUP[2], GROUP[1]], [True, False], teacher=teacher)
    assert [evidence_of(tokenizer, e) for e in examples] == expected
    assert all(e.p_acc == 0.5 for e in examples)  # P_acc counts the dropped completion


def test_a_group_without_a_correct_rollout_is_skipped_or_sees_the_demo(tokenizer):
    skip = TeacherConfig(template="correct_solution", no_correct_rollout="skip")
    assert revise(tokenizer, ["Answer: 0", "Answer: 1"], [False, False], teacher=skip) == []
    demo = TeacherConfig(template="correct_solution", no_correct_rollout="demo")
    examples = revise(tokenizer, ["Answer: 0", "Answer: 1"], [False, False], teacher=demo)
    assert [evidence_of(tokenizer, e) for e in examples] == ["demo", "demo"]


def test_revised_completions_are_capped_at_max_completion_tokens(tokenizer):
    texts = ["2+1 is three, since adding one counts up once\nAnswer: 3\nConfidence: 1.00", "Answer: 3"]
    examples = revise(tokenizer, texts, [True, True], max_completion_tokens=20)
    capped, short = (tokenizer.decode(e.completion) for e in examples)
    assert len(examples[0].completion) == 20 and capped.endswith("\nConfidence: 1.00<|im_end|>")
    assert texts[0].startswith(capped.removesuffix("\nConfidence: 1.00<|im_end|>"))
    assert short == "Answer: 3\nConfidence: 1.00<|im_end|>"


def test_revise_epoch_keeps_prompt_then_rollout_order(tokenizer):
    other = TaskExample([{"role": "user", "content": "Q: 1+1=?"}], reference=2, demonstration="Answer: 2", id="r")
    examples = [EXAMPLE, other]
    prompts = [prompt_ids(tokenizer, example.student_messages()) for example in examples]
    groups = [rollouts(tokenizer, ["Answer: 3", "Answer: 4"]), rollouts(tokenizer, ["Answer: 2", "Answer: 2"])]
    revised = revise_epoch(tokenizer, examples, prompts, groups, [[True, False], [True, True]], RevisionSettings())
    assert [e.student_prompt for e in revised] == [prompts[0]] * 2 + [prompts[1]] * 2
    assert [e.p_acc for e in revised] == [0.5, 0.5, 1.0, 1.0]
    assert [tokenizer.decode(e.completion).split("\n")[0] for e in revised] == ["Answer: 3", "Answer: 4"] + [
        "Answer: 2"
    ] * 2


def test_evidence_and_next_correct_on_plain_verdicts():
    group = [Rollout([], text, True) for text in GROUP]
    teacher = TeacherConfig(template="correct_solution")
    evidence = evidence_for(EXAMPLE, group, GROUP_CORRECT, 0, teacher)
    assert (evidence.source, evidence.template, evidence.stated) == (2, "correct_solution", 0.6)
    assert evidence_for(EXAMPLE, group, GROUP_CORRECT, 1, TeacherConfig()).source == DEMONSTRATION
    assert [next_correct(GROUP_CORRECT, i) for i in range(4)] == [2, 2, 0, 0]
    assert next_correct([True], 0) is None and next_correct([False, False], 1) is None


def test_the_teacher_never_reads_a_rollout_that_says_what_its_target_says():
    # Identical rollouts are common for short answers: chosen by position, the "other" correct rollout was the very
    # body being distilled (with another confidence line).
    texts = ["Answer: 7\nConfidence: 0.9", "Answer: 7\nConfidence: 0.4", "Answer: 7", "7 + 0 = 7\nAnswer: 7"]
    group = [Rollout([], text, True) for text in texts]
    teacher = TeacherConfig(template="correct_solution", no_correct_rollout="skip")
    sources = [getattr(evidence_for(EXAMPLE, group, [True] * 4, i, teacher), "source", None) for i in range(4)]
    assert sources == [3, 3, 3, 0]  # every "Answer: 7" sees the one different rollout; that one sees the next
    same = [Rollout([], "Answer: 7", True)] * 3
    assert all(evidence_for(EXAMPLE, same, [True] * 3, i, teacher) is None for i in range(3))  # nothing else: skip
    assert next_correct([True, True], 0, ["a", "a"]) is None and next_correct([True, True], 0) == 1


def test_a_demonstration_needed_and_missing_names_the_key():
    bare = TaskExample(EXAMPLE.messages, reference=3, id="bare")
    with pytest.raises(ValueError, match="teacher.template='demo' needs a demonstration.*'bare'"):
        evidence_for(bare, [Rollout([], "Answer: 0", True)], [False], 0, TeacherConfig())


@pytest.mark.parametrize("calibration", ["empirical", "none"])
def test_correct_solution_with_the_demonstration_is_the_reference_codes_mode(tokenizer, calibration):
    # Issue 21, item 6: the reference's correct_solution mode shows the golden demonstration under "Correct
    # solution:" (its teacher prompt is built when the data is loaded), whatever the rollouts say.
    teacher = TeacherConfig(template="correct_solution", evidence="demonstration")
    examples = revise(tokenizer, GROUP, GROUP_CORRECT, calibration=calibration, teacher=teacher)
    assert len(examples) == len(GROUP)  # every completion has the demonstration to be shown
    prompts = {tokenizer.decode(example.teacher_prompt) for example in examples}
    assert len(prompts) == 1  # one teacher prompt per question, as the reference builds it
    (prompt,) = prompts
    assert "Correct solution:\n2+1=3\nAnswer: 3\nConfidence: " in prompt
    assert "Correctly solve the original question." in prompt
    assert "This is an example for a response" not in prompt
    evidence = evidence_for(EXAMPLE, rollouts(tokenizer, GROUP), GROUP_CORRECT, 0, teacher)
    assert (evidence.source, evidence.template, evidence.stated) == (DEMONSTRATION, "correct_solution", 1.0)
    bare = TaskExample(EXAMPLE.messages, reference=3, id="bare")
    with pytest.raises(ValueError, match="data.teacher.evidence='demonstration' needs a demonstration.*'bare'"):
        evidence_for(bare, rollouts(tokenizer, GROUP), GROUP_CORRECT, 0, teacher)
    with pytest.raises(ValueError, match="data.teacher.evidence must be"):
        TeacherConfig(template="correct_solution", evidence="golden")
