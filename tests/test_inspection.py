"""Inspecting a run: rollout records from an epoch's material, and a fit that writes them through the entry point."""

import csv
import json

import pytest
import yaml
from helpers import small_config

from caopd_pl.__main__ import main
from caopd_pl.callbacks import log_completions, markdown_table
from caopd_pl.confidence import CONFIDENCE_INSTRUCTION
from caopd_pl.grpo import PolicyExample
from caopd_pl.inspection import TABLE_COLUMNS, EpochTrace, rollout_records
from caopd_pl.revision import RevisionSettings, revise_group
from caopd_pl.rollout.base import Rollout
from caopd_pl.tasks.base import TaskExample
from caopd_pl.templates import TeacherConfig, prompt_ids

INSPECT = ["--trainer.callbacks+=caopd_pl.callbacks.InspectRollouts", "--trainer.callbacks.prompts=2"]


def _trace(tokenizer) -> EpochTrace:
    """Two prompts of two rollouts; correct_solution with skip: a prompt with no correct rollout is dropped."""
    settings = RevisionSettings(teacher=TeacherConfig(template="correct_solution", no_correct_rollout="skip"))
    prompts = [TaskExample([{"role": "user", "content": f"{n}+1"}], n + 1, id=f"q{n}") for n in (1, 2)]
    student = [prompt_ids(tokenizer, example.student_messages()) for example in prompts]
    texts = [["2\nConfidence: 0.9", "two\nConfidence: 0.8"], ["3", "4\nConfidence: 1"]]
    rollouts = [[Rollout(tokenizer.encode(text), text, True) for text in group] for group in texts]
    verdicts = [[True, True], [False, False]]
    groups = [revise_group(tokenizer, *prompt, settings) for prompt in zip(prompts, student, rollouts, verdicts)]
    return EpochTrace(3, prompts, student, rollouts, verdicts, groups)


def test_records_show_each_rollout_its_target_and_its_teacher(tokenizer):
    records = rollout_records(tokenizer, _trace(tokenizer))
    assert [(r["prompt_id"], r["rollout"], r["correct"]) for r in records] == [
        ("q1", 0, True),
        ("q1", 1, True),
        ("q2", 0, False),
        ("q2", 1, False),
    ]
    first = records[0]
    assert first["epoch"] == 3 and first["p_acc"] == 1.0 and first["stated_confidence"] == 0.9
    assert CONFIDENCE_INSTRUCTION in first["prompt"] and first["completion"] == "2\nConfidence: 0.9"
    assert first["revised_completion"].startswith("2\nConfidence: 1.00")  # P_acc, then EOS
    assert "Correct solution:\ntwo" in first["teacher_prompt"]  # the other correct rollout is its evidence
    dropped = records[2]  # no correct rollout, no_correct_rollout: skip
    assert dropped["p_acc"] == 0.0 and dropped["stated_confidence"] is None
    assert dropped["revised_completion"] is None and dropped["teacher_prompt"] is None
    assert len(rollout_records(tokenizer, _trace(tokenizer), prompts=1)) == 2  # the first prompt's K rollouts


def test_rl_records_carry_reward_and_advantage(tokenizer):
    trace = _trace(tokenizer)
    trace.examples = [
        [PolicyExample([], rollout.token_ids, reward, reward - 0.5) for rollout, reward in zip(group, (1.0, 0.0))]
        for group in trace.rollouts
    ]
    records = rollout_records(tokenizer, trace)
    assert [(r["reward"], r["advantage"]) for r in records] == [(1.0, 0.5), (0.0, -0.5)] * 2
    assert all(r["revised_completion"] is None and r["teacher_prompt"] is None for r in records)


def test_markdown_cells_show_their_text_as_is():
    table = markdown_table(["a", "b"], [["x|y *z*", "<|im_end|>\nnext"]])
    lines = table.splitlines()
    assert lines[0] == "| a | b |" and len(lines) == 3
    assert lines[2] == "| x&#124;y &#42;z&#42; | &lt;&#124;im&#95;end&#124;&gt;<br>next |"


def test_a_logger_without_tables_gets_nothing(tmp_path):
    class Other:
        pass

    log_completions(Other(), [[None] * len(TABLE_COLUMNS)], step=0)  # neither CSV, TensorBoard nor W&B: no error


@pytest.mark.slow
def test_fit_with_inspection_writes_rollouts_and_the_completions_table(tmp_path, capsys):
    config = small_config(tmp_path, max_epochs=2)
    assert main(["fit", "--config", str(config), *INSPECT]) == 0
    log_dir = tmp_path / "logs/version_0"
    for epoch in (0, 1):
        records = [json.loads(line) for line in (log_dir / f"rollouts/epoch_{epoch}.jsonl").read_text().splitlines()]
        assert len(records) == 2 * 2  # 2 prompts x K = 2 rollouts
        assert {r["epoch"] for r in records} == {epoch} and [r["rollout"] for r in records] == [0, 1, 0, 1]
        for record in records:
            assert CONFIDENCE_INSTRUCTION in record["prompt"] and "<|im_start|>user" in record["prompt"]
            assert isinstance(record["correct"], bool) and 0.0 <= record["p_acc"] <= 1.0
            # the quickstart's demo template: every completion is revised to state P_acc, its teacher sees the demo
            assert f"Confidence: {record['p_acc']:.2f}" in record["revised_completion"]
            assert "This is an example for a response to the question:" in record["teacher_prompt"]
    with (log_dir / "completions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", *TABLE_COLUMNS]
    assert [row["epoch"] for row in rows] == ["0"] * 4 + ["1"] * 4
    assert [row["step"] for row in rows] == ["0"] * 4 + ["2"] * 4  # the optimizer step the epoch started at
    assert rows[4]["completion"] == records[0]["completion"]  # records: epoch 1's


@pytest.mark.slow
def test_fit_with_inspection_gives_tensorboard_a_text_table(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _fit_with_logger(tmp_path, "lightning.pytorch.loggers.TensorBoardLogger")
    (events,) = tmp_path.glob("lightning_logs/version_0/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"tensors": 0}).Reload()
    (entry,) = accumulator.Tensors("rollouts/text_summary")
    table = entry.tensor_proto.string_val[0].decode()
    assert table.startswith("| step | epoch | prompt_id |") and len(table.splitlines()) == 2 + 4
    assert (tmp_path / "lightning_logs/version_0/rollouts/epoch_0.jsonl").exists()


@pytest.mark.slow
def test_fit_with_inspection_gives_wandb_a_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _fit_with_logger(tmp_path, "lightning.pytorch.loggers.WandbLogger")
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/rollouts_*.table.json"))
    assert tables and len(json.loads(tables[0].read_text())["data"]) == 4


def _fit_with_logger(root, class_path: str) -> None:
    """A one-epoch fit with inspection on, logging to ``class_path`` (saving under ``root``)."""
    config = small_config(root, max_epochs=1)
    content = yaml.safe_load(config.read_text())
    content["trainer"]["logger"] = {"class_path": class_path, "init_args": {"save_dir": str(root)}}
    config.write_text(yaml.safe_dump(content))
    assert main(["fit", "--config", str(config), *INSPECT]) == 0
