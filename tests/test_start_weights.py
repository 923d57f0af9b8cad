"""The starting weights fit keeps (caopd_pl.start_weights), and test's comparison of a checkpoint with them."""

import csv
import hashlib
import json

import pytest
import safetensors.torch
import torch
import yaml
from helpers import small_config
from test_precision import local_model_config

from caopd_pl import start_weights
from caopd_pl.__main__ import main
from caopd_pl.models.loading import ModelConfig, load_model
from caopd_pl.models.lora import LoraSettings, add_adapters
from caopd_pl.models.tiny import TinyModelConfig

QWEN3 = TinyModelConfig(
    architecture="qwen3", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64
)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_the_saved_start_loads_into_the_trained_model_and_swaps_out_exactly(tmp_path, tiny_model):
    record = start_weights.save(tiny_model, [tmp_path / "a", tmp_path / "b"])
    data = (tmp_path / "a" / start_weights.FILE).read_bytes()
    assert (tmp_path / "b" / start_weights.FILE).read_bytes() == data
    assert record == {"file": "start.safetensors", "sha256": hashlib.sha256(data).hexdigest()}
    start = _params(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(torch.randn_like(p))  # "training"
    trained = _params(tiny_model)
    weights, why = start_weights.load(tmp_path / "a" / "last.ckpt", record, tiny_model)
    assert why == "" and weights is not None
    with start_weights.swapped_in(tiny_model, weights):
        assert _equal(_params(tiny_model), start)
    assert _equal(_params(tiny_model), trained)  # bit for bit


def test_load_says_in_one_line_why_a_checkpoint_has_no_start(tmp_path, tiny_model):
    checkpoint = tmp_path / "run" / "last.ckpt"
    assert start_weights.load(checkpoint, None, tiny_model)[1].startswith("last.ckpt records no starting weights")
    record = start_weights.save(tiny_model, [tmp_path / "elsewhere"])
    assert start_weights.load(checkpoint, record, tiny_model)[1].startswith("no start.safetensors beside")
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    start_weights.save(tiny_model, [tmp_path / "run"])  # another run's start in the same folder
    weights, why = start_weights.load(checkpoint, record, tiny_model)
    assert weights is None and "is not the start of last.ckpt" in why and "\n" not in why


def test_a_resume_into_another_folder_carries_the_start_there(tmp_path, tiny_model):
    record = start_weights.save(tiny_model, [tmp_path / "first"])
    kept = (tmp_path / "first" / start_weights.FILE).read_bytes()
    start_weights.save(torch.nn.Linear(2, 2), [tmp_path / "taken"])  # another run's start
    folders = [tmp_path / "first", tmp_path / "new", tmp_path / "taken"]
    start_weights.carry(record, tmp_path / "first" / "last.ckpt", folders)
    assert all((folder / start_weights.FILE).read_bytes() == kept for folder in folders)


def test_under_lora_only_the_student_adapter_is_kept():
    student, _ = load_model(ModelConfig(tiny=QWEN3))
    everything = set(dict(student.named_parameters()))
    add_adapters(student, LoraSettings(rank=4, alpha=8.0))
    kept = start_weights.trainable_names(student)
    assert kept and all("lora_" in name and ".student." in name for name in kept)
    assert not any(name in everything for name in kept)  # the base is in every checkpoint, not in the file


def test_test_compares_a_checkpoint_with_the_start_fit_evaluated(tiny_run, tmp_path, capsys):
    # Tested on the validation prompts, the start is the one fit evaluated before its first epoch, answer for answer.
    ckpt = tiny_run / "checkpoints/last.ckpt"
    record = torch.load(ckpt, weights_only=False)["caopd"]["start_file"]
    kept = (tiny_run / "checkpoints" / start_weights.FILE).read_bytes()
    assert record["sha256"] == hashlib.sha256(kept).hexdigest()
    args = ["--trainer.default_root_dir", str(tmp_path), "--data.test_split", "val"]
    assert main(["test", "--config", str(tiny_run / "config.yaml"), "--ckpt_path", str(ckpt), *args]) == 0
    assert "before and after (8 test prompts, greedy readout):" in capsys.readouterr().out
    out = tmp_path / "test" / "last"
    tested = json.loads((out / "before_after.json").read_text())
    (log_dir,) = tiny_run.glob("logs/version_*")
    fitted = json.loads((log_dir / "before_after.json").read_text())
    assert tested["start"] == fitted["start"]
    assert tested["end"]["metrics"]["greedy"] == json.loads((out / "metrics.json").read_text())["by_readout"]["greedy"]
    assert (out / "before_after.png").read_bytes()[:4] == b"\x89PNG"
    (row,) = [row for row in csv.DictReader((out / "metrics.csv").open()) if row.get("start/accuracy")]
    assert float(row["start/accuracy"]) == fitted["start"]["metrics"]["greedy"]["accuracy"]


@pytest.mark.slow  # two fits (one resumed) through the CLI
def test_a_resumed_fit_keeps_the_start_its_first_start_wrote(tmp_path):
    config = small_config(tmp_path, max_epochs=1)
    assert main(["fit", "--config", str(config)]) == 0
    kept, last = tmp_path / "checkpoints" / start_weights.FILE, tmp_path / "checkpoints/last.ckpt"
    first, record = kept.read_bytes(), torch.load(last, weights_only=False)["caopd"]["start_file"]
    assert main(["fit", "--config", str(config), "--trainer.max_epochs", "2", "--ckpt_path", "last"]) == 0
    assert kept.read_bytes() == first
    resumed = torch.load(last, weights_only=False)
    assert resumed["caopd"]["start_file"] == record and resumed["epoch"] == 1
    start = safetensors.torch.load(first)
    trained = {name: resumed["state_dict"][f"student.{name}"] for name in start}
    assert not _equal(start, trained)  # what a rewrite would have kept


def test_a_checkpoint_without_a_start_is_tested_alone(tiny_run, tmp_path, capsys):
    checkpoint = torch.load(tiny_run / "checkpoints/last.ckpt", weights_only=False)
    del checkpoint["caopd"]["start_file"]  # as fit wrote them before it kept the start
    torch.save(checkpoint, tmp_path / "old.ckpt")
    args = ["--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "old.ckpt")]
    assert main(["test", "--config", str(tiny_run / "config.yaml"), *args]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "starting weights" in line]
    assert len(lines) == 1 and lines[0].startswith("old.ckpt records no starting weights (written before fit kept")
    assert lines[0].endswith("; testing the checkpoint alone")
    assert (tmp_path / "test/old/metrics.json").exists() and not (tmp_path / "test/old/before_after.json").exists()


def test_test_start_false_tests_the_checkpoint_alone(tiny_run, tmp_path, capsys):
    args = ["--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(tiny_run / "checkpoints/last.ckpt")]
    assert main(["test", "--config", str(tiny_run / "config.yaml"), *args, "--model.test_start", "false"]) == 0
    assert "before and after" not in capsys.readouterr().out
    assert (tmp_path / "test/last/metrics.json").exists() and not (tmp_path / "test/last/before_after.json").exists()


@pytest.mark.slow  # a fit and a test of a local model beside LoRA adapters: minutes on a busy CPU
def test_a_lora_run_keeps_its_start_adapter_and_test_evaluates_the_start_fit_evaluated(tmp_path):
    config, _ = local_model_config(tmp_path, max_epochs=1, scale=0.3, lora={"rank": 4, "alpha": 64.0})
    settings = yaml.safe_load(config.read_text())
    settings["data"]["rollout"]["max_new_tokens"] = 16  # this tokenizer's confidence line takes 8
    config.write_text(yaml.safe_dump(settings))
    assert main(["fit", "--config", str(config)]) == 0
    kept = safetensors.torch.load_file(tmp_path / "checkpoints" / start_weights.FILE)
    assert kept and all("lora_" in name and ".student." in name for name in kept)
    root, ckpt = tmp_path / "tested", tmp_path / "checkpoints/last.ckpt"
    args = ["--trainer.default_root_dir", str(root), "--data.test_split", "val"]
    assert main(["test", "--config", str(config), "--ckpt_path", str(ckpt), *args]) == 0
    (log_dir,) = tmp_path.glob("logs/version_*")
    fitted = json.loads((log_dir / "before_after.json").read_text())
    assert json.loads((root / "test/last/before_after.json").read_text())["start"] == fitted["start"]
