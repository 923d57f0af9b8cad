"""reasoning-gym tasks: disjoint deterministic splits, demonstrations the verifier accepts (from JSON, as written to
disk), an ood split at the harder config, one-line errors naming the key, and a run through the CLI from YAML."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from helpers import small_config

from caopd_pl.__main__ import main
from caopd_pl.errors import UsageError
from caopd_pl.tasks.reasoning_gym import ANSWER_BLOCK, ANSWER_LINE, ReasoningGymTask
from caopd_pl.verifiers import build

CLASS_PATH = "caopd_pl.tasks.reasoning_gym.ReasoningGymTask"
CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
# (dataset, config): a number, a list written as a string, strings, a comma-separated list, a worked solution, a grid.
GENERATORS = [
    ("chain_sum", CHAIN_SUM),
    ("number_sorting", {"min_numbers": 3, "max_numbers": 5}),
    ("spell_backward", {}),
    ("letter_jumble", {}),
    ("word_sorting", {}),
    ("gsm_symbolic", {}),
    ("mini_sudoku", {}),
]


def small(dataset: str, config: dict | None = None, **kwargs) -> ReasoningGymTask:
    sizes = {"num_train": 24, "num_val": 6, "num_test": 8, "num_ood": 6, "seed": 3}
    return ReasoningGymTask(dataset, config=config, **{**sizes, **kwargs})


def questions(examples) -> list[str]:
    return [e.reference["entry"]["question"] for e in examples]


@pytest.fixture(scope="module")
def verifier():
    with build("reasoning_gym", workers=2) as built:
        yield built


@pytest.mark.parametrize(("dataset", "config"), GENERATORS)
def test_splits_are_sized_disjoint_and_deterministic(dataset, config):
    task = small(dataset, config)
    assert task.splits() == ("train", "val", "test")
    drawn = {name: questions(task.split(name)) for name in task.splits()}
    assert [len(drawn[name]) for name in task.splits()] == [24, 6, 8]
    held_out = drawn["val"] + drawn["test"]
    assert len(set(held_out)) == len(held_out)  # distinct within and across the held-out splits
    assert not set(held_out) & set(drawn["train"])  # and never trained on
    again = small(dataset, config)
    assert {name: questions(again.split(name)) for name in again.splits()} == drawn
    assert [e.id for e in again.split("val")] == [f"{dataset}-val-{i}" for i in range(6)]
    assert questions(small(dataset, config, seed=4).split("test")) != drawn["test"]


@pytest.mark.parametrize(("dataset", "config"), GENERATORS)
def test_every_demonstration_is_judged_correct_and_a_wrong_answer_is_not(dataset, config, verifier):
    task = small(dataset, config, ood_config={})
    assert task.verifier.name == "reasoning_gym"
    examples = [e for name in task.splits() for e in task.split(name)]
    references = [json.loads(json.dumps(e.reference)) for e in examples]  # as a predictions file holds them
    demonstrations = [f"{e.demonstration}\nConfidence: 1.00" for e in examples]
    verdicts = verifier.verify_batch(demonstrations, references)
    assert [v.status for v in verdicts] == ["correct"] * len(examples), [v.detail for v in verdicts if not v.correct]
    # Another example's answer (a different one) is wrong for this one.
    answers = [e.reference["entry"]["answer"] for e in examples]
    pairs = [(i, j) for i, j in zip(range(len(examples)), range(1, len(examples))) if answers[i] != answers[j]]
    swapped = verifier.verify_batch([demonstrations[j] for _, j in pairs], [references[i] for i, _ in pairs])
    assert pairs and not any(v.correct for v in swapped)


def test_prompts_demonstrations_and_meta():
    (chain,) = small("chain_sum", CHAIN_SUM).split("test")[:1]
    question = chain.reference["entry"]["question"]
    assert chain.messages == [{"role": "user", "content": f"{question}\n\n{ANSWER_LINE}"}]
    assert chain.student_messages()[0]["content"].startswith(f"{question}\n\n{ANSWER_LINE}\n\nEnd your response")
    entry = chain.reference["entry"]  # the arithmetic written out with its value, then the answer line
    assert chain.demonstration == f"{entry['metadata']['expression']} = {entry['answer']}\nAnswer: {entry['answer']}"
    assert chain.meta == {"level": "chain_sum", "dataset": "chain_sum"} and chain.reference["config"] == CHAIN_SUM
    assert set(chain.reference) == {"dataset", "config", "entry"}
    assert set(chain.reference["entry"]) == {"question", "answer", "metadata"}

    gsm = small("gsm_symbolic").split("val")[0]  # the one generator with a worked solution
    solution = gsm.reference["entry"]["metadata"]["answer_cot"]
    assert gsm.demonstration.startswith(solution.split("\n")[0]) and "####" not in gsm.demonstration
    assert gsm.demonstration.endswith(f"\nAnswer: {gsm.reference['entry']['answer']}")

    (bare,) = small("chain_sum", CHAIN_SUM, solutions=False).split("test")[:1]  # the answer line alone
    assert bare.reference == chain.reference and bare.demonstration == f"Answer: {entry['answer']}"

    words = small("spell_backward").split("val")[0]  # no worked solution, no expression: the answer line alone
    assert words.demonstration == f"Answer: {words.reference['entry']['answer']}"

    grid = small("mini_sudoku").split("val")[0]  # an answer over several lines goes under "Answer:"
    assert grid.messages[0]["content"].endswith(ANSWER_BLOCK)
    assert grid.demonstration == f"Answer:\n{grid.reference['entry']['answer']}"


def test_the_ood_split_uses_the_harder_config():
    task = small("chain_sum", CHAIN_SUM, ood_config={"min_terms": 3, "max_terms": 3})
    assert task.splits() == ("train", "val", "test", "ood")
    ood = task.split("ood")
    assert len(ood) == 6 and {e.meta["level"] for e in ood} == {"chain_sum@ood"}
    assert {e.reference["entry"]["metadata"]["num_terms"] for e in ood} == {3}
    assert ood[0].reference["config"] == {**CHAIN_SUM, "min_terms": 3, "max_terms": 3}
    assert {e.reference["entry"]["metadata"]["num_terms"] for e in task.split("test")} == {2}
    assert not set(questions(ood)) & set(questions(task.split("train")))


def test_a_small_question_space_fills_held_out_splits_first_and_fails_in_one_line():
    one_digit = {**CHAIN_SUM, "max_digits": 1}  # 10 x 10 x 2 = 200 distinct questions
    task = small("chain_sum", one_digit, num_train=300, num_val=50, num_test=100)
    assert len(set(questions(task.split("test")) + questions(task.split("val")))) == 150
    train = questions(task.split("train"))
    assert len(train) == 300 and len(set(train)) <= 50  # train repeats the 50 questions left, as the generator does
    with pytest.raises(UsageError, match=r"^data\.task\.init_args\.num_val=150: chain_sum gave 100 usable") as err:
        small("chain_sum", one_digit, num_val=150, num_test=100).split("train")
    assert "\n" not in str(err.value) and "widen data.task.init_args.config" in str(err.value)


def test_a_generator_without_a_reference_answer_is_refused():
    with pytest.raises(UsageError, match=r"dataset='boxnet': none of its \d+ entries .* not supported"):
        small("boxnet").split("test")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dataset": "chain_sums"},
            r"^data\.task\.init_args\.dataset='chain_sums' is not a reasoning-gym generator; "
            r"did you mean 'chain_sum'",
        ),
        (
            {"config": {"min_term": 2}},
            r"^data\.task\.init_args\.config\.min_term: chain_sum has no such setting; "
            r"did you mean 'min_terms'\? its settings: min_terms, max_terms, min_digits, max_digits, allow_negation$",
        ),
        ({"ood_config": {"terms": 3}}, r"^data\.task\.init_args\.ood_config\.terms: chain_sum has no such setting"),
        ({"config": {"seed": 1}}, r"^data\.task\.init_args\.config\.seed: set by the task"),
        ({"config": {"min_terms": 3, "max_terms": 2}}, r"^data\.task\.init_args\.config=.*max_terms must be >= min"),
        ({"num_test": -1}, r"^data\.task\.init_args\.num_test=-1: must be >= 0$"),
    ],
)
def test_bad_settings_fail_at_construction_in_one_line_naming_the_key(kwargs, message):
    with pytest.raises(UsageError, match=message) as err:
        ReasoningGymTask(**{"dataset": "chain_sum", **kwargs})
    assert "\n" not in str(err.value)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    monkeypatch.setitem(sys.modules, "reasoning_gym.factory", None)
    with pytest.raises(UsageError, match=r'^data\.task\.init_args\.dataset: .*pip install -e "\.\[real\]"$'):
        ReasoningGymTask("chain_sum")


@pytest.mark.slow
def test_the_task_runs_through_the_cli_from_yaml_and_its_predictions_verify_and_report(tmp_path, capsys):
    config_path = small_config(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    init_args = {"dataset": "chain_sum", "config": CHAIN_SUM, "ood_config": {"min_terms": 3, "max_terms": 3}}
    init_args |= {"num_train": 8, "num_val": 4, "num_test": 4, "num_ood": 4, "seed": 5}
    config["data"]["task"] = {"class_path": CLASS_PATH, "init_args": init_args}
    config["data"]["test_split"] = "ood"
    config_path.write_text(yaml.safe_dump(config))
    assert main(["test", "--config", str(config_path), "--model.warm_start", "null"]) == 0
    records = [json.loads(line) for path in sorted(tmp_path.rglob("test_predictions.jsonl")) for line in path.open()]
    task = ReasoningGymTask(**init_args)
    expected = {e.id: e for e in task.split("ood")}
    assert sorted(r["id"] for r in records) == sorted(expected)  # the CLI built the same task from YAML
    assert {r["level"] for r in records} == {"chain_sum@ood"}
    assert all(r["status"] in ("correct", "wrong") for r in records)  # the tiny model's text was judged, not errors

    # The references written by the CLI, read back by `verify`, judge each demonstration correct.
    rows = [
        {
            "id": r["id"],
            "completion": f"{expected[r['id']].demonstration}\nConfidence: 1.00",
            "reference": r["reference"],
        }
        for r in records
    ]
    source, judged = tmp_path / "demos.jsonl", tmp_path / "judged.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert (
        main(["verify", "--verifier", "reasoning_gym", "--input", str(source), "--output", str(judged), "--quiet"]) == 0
    )
    assert all(json.loads(line)["correct"] for line in judged.read_text().splitlines())
    assert main(["report", "--input", str(judged), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["accuracy"] == 1.0 and metrics["format_adherence"] == 1.0 and metrics["n"] == len(records)
