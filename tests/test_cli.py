"""End-to-end runs through the real entry point (``python -m caopd_pl``), on CPU, in seconds."""

import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch
import yaml
from helpers import metrics_rows, small_config
from lightning.pytorch import Callback

from caopd_pl.__main__ import main
from caopd_pl.cli import cli_main
from caopd_pl.confidence import CONFIDENCE_INSTRUCTION
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.errors import UsageError
from caopd_pl.module import CaOPDModule

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fit_then_test_through_the_entry_point(tmp_path, capsys):
    config = small_config(tmp_path)
    assert main(["fit", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"checkpoints: {tmp_path / 'checkpoints'} (last: {tmp_path / 'checkpoints/last.ckpt'})" in out
    assert f"logs: {tmp_path / 'logs/version_0'} (config.yaml, hparams.yaml, metrics.csv)" in out
    assert "last validation: accuracy " in out  # the end-of-fit summary
    assert "task: ArithmeticTask; verifier: exact (caopd_pl.verifiers.exact.ExactAnswerVerifier)" in out  # the judge

    rows = metrics_rows(tmp_path)
    logged = {key for row in rows for key, value in row.items() if value}
    for key in ("train/loss", "train/kl", "rollout/p_acc", "rollout/stated_confidence", "val/accuracy", "val/ece"):
        assert key in logged, key
    assert [row["step"] for row in rows if row.get("warmstart/loss")] == ["0", "1", "2", "3"]  # the warm start
    assert max(int(row["epoch"]) for row in rows if row["epoch"]) == 1
    assert (tmp_path / "logs/version_0/config.yaml").exists()  # resolved config saved beside the run
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)
    assert any(key.startswith("teacher.") for key in checkpoint["state_dict"])
    assert checkpoint["global_step"] == 2 * 2  # 2 epochs x (4 prompts x 2 samples / batch 4)

    ckpt = str(tmp_path / "checkpoints/last.ckpt")
    assert main(["test", "--config", str(config), "--ckpt_path", ckpt]) == 0
    assert main(["test", "--config", str(config), "--ckpt_path", ckpt]) == 0  # replaces, no second folder
    written = "wrote metrics.json, test_predictions.jsonl, reliability.png, reliability_readouts.png to "
    assert written + str(tmp_path / "test" / "last") in capsys.readouterr().out  # every file it writes, named
    (metrics_file,) = tmp_path.glob("*/*/metrics.json")
    assert metrics_file.parent == tmp_path / "test" / "last"
    metrics = json.loads(metrics_file.read_text())
    summary = {"accuracy", "mean_confidence", "ece", "brier", "spr", "ocg", "auroc", "format_adherence", "n"}
    assert set(metrics) == summary | {"readout", "by_readout"}
    # The primary readout (greedy by default) at the top, every readout under by_readout (caopd_pl.readouts).
    assert metrics["readout"] == "greedy" and set(metrics["by_readout"]) == {"greedy", "expected"}
    assert {key: metrics[key] for key in summary} == metrics["by_readout"]["greedy"]
    assert metrics["n"] == 8 and 0.0 <= metrics["accuracy"] <= 1.0
    assert (metrics_file.parent / "reliability.png").stat().st_size > 1000

    assert main(["predict", "--config", str(config), "--ckpt_path", ckpt]) == 0
    (predictions,) = tmp_path.glob("*/*/predictions.jsonl")
    assert predictions.parent == tmp_path / "predict" / "last"
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["version_0"]  # test/predict opened no version_N
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(lines) == 8 and {"completion", "correct", "confidence", "parsed"} <= set(lines[0])
    # The prompt exactly as the model read it: the chat template and the confidence instruction included.
    assert "<|im_start|>user" in lines[0]["prompt"] and CONFIDENCE_INSTRUCTION in lines[0]["prompt"]


class Probe(Callback):
    """Records the epoch and teacher weights at the start of (resumed) training."""

    def on_train_start(self, trainer, module):
        self.epoch = trainer.current_epoch
        self.teacher = {k: v.clone() for k, v in module.teacher.state_dict().items()}
        self.warm_started = module.warm_started


@pytest.mark.slow
def test_resume_from_last_restores_epoch_and_teacher(tmp_path):
    assert main(["fit", "--config", str(small_config(tmp_path, max_epochs=1))]) == 0
    saved = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)

    cli = cli_main(["--config", str(small_config(tmp_path, max_epochs=2))], run=False)
    probe = Probe()
    cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path="last")

    assert probe.epoch == 1 and probe.warm_started  # resumed after epoch 0, no second warm start
    for key, value in probe.teacher.items():
        assert torch.equal(value, saved["state_dict"][f"teacher.{key}"]), key
    assert cli.trainer.current_epoch == 2


# configs/continual/*.yaml are runner configs, parsed by tests/continual/test_continual_config.py; configs/layers/
# hold layers laid over a fit config (--config BASE --config LAYER), each parsed over the config its header names;
# configs/paper/ holds a base and its model and task layers, parsed as the four setups they stack into.
FIT_CONFIGS = sorted(
    p for p in (REPO / "configs").rglob("*.yaml") if not {"continual", "layers", "paper"} & set(p.parts)
)
LAYERS = sorted((REPO / "configs" / "layers").glob("*.yaml"))
PAPER = REPO / "configs" / "paper"
PAPER_SETUPS = [
    (PAPER / "base.yaml", model, task)
    for model in sorted((PAPER / "model").glob("*.yaml"))
    for task in sorted((PAPER / "task").glob("*.yaml"))
]
PULLED = "./models/smollm2-135m-instruct"


def _layered(path: Path | tuple[Path, ...]) -> list[str]:
    """``--config`` arguments of a shipped config: a layer comes after the base its header's command names."""
    if isinstance(path, tuple):  # a paper setup: the base, then its layers
        return [arg for part in path for arg in ("--config", str(part))]
    if path not in LAYERS:
        return ["--config", str(path)]
    (base,) = re.findall(r"--config (configs/\S+\.yaml) --config configs/layers/", path.read_text())
    return ["--config", str(REPO / base), "--config", str(path)]


def _config_id(path: Path | tuple[Path, ...]) -> str:
    if isinstance(path, tuple):
        return "paper/" + "+".join(part.stem for part in path)
    return f"{path.parent.name}/{path.name}"


@pytest.mark.slow
@pytest.mark.parametrize("path", FIT_CONFIGS + LAYERS + PAPER_SETUPS, ids=_config_id)
def test_every_fit_config_parses(path, capsys, request):
    configs = _layered(path)
    with pytest.raises(SystemExit, match="0"):
        cli_main(["fit", *configs, "--print_config"])  # every key and type checked, nothing built
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]
    model = []
    if printed["model"]["model"]["name_or_path"] == PULLED:  # the real model, pulled once per session
        model = ["--model.model.name_or_path", str(request.getfixturevalue("smollm2_dir"))]
    try:
        cli = cli_main([*configs, *model, "--trainer.logger", "false"], run=False)
    except UsageError as err:
        # Configs for the paper's data name folders the user brings (docs/paper_setting.md): built, they stop at
        # the first missing one, in one line.
        assert "data.task.init_args." in str(err) and "no such file or folder" in str(err)
        return
    assert isinstance(cli.model, CaOPDModule) and isinstance(cli.datamodule, RolloutDataModule)


@pytest.mark.slow
def test_the_module_gets_the_datamodules_task_and_engine_explicitly(tmp_path):
    cli = cli_main(["--config", str(small_config(tmp_path)), "--trainer.logger", "false"], run=False)
    model, data = cli.model, cli.datamodule
    assert model.task is data.task and model.shared_engine is data.shared_engine  # one engine for rollouts and eval
    assert data.shared_engine.student is model.student and data.shared_engine.tokenizer is model.tokenizer
    assert "task" not in model.hparams and "shared_engine" not in model.hparams  # run objects, not settings


@pytest.mark.slow
def test_distributed_sampler_is_refused_before_anything_runs(tmp_path):
    args = ["--config", str(small_config(tmp_path)), "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    with pytest.raises(UsageError, match="trainer.use_distributed_sampler=true: each rank already samples"):
        cli_main([*args, "--trainer.use_distributed_sampler", "true"], run=False)
    assert cli_main(args, run=False).trainer.world_size == 2  # the default (false) passes


def test_help_and_unknown_command(capsys):
    assert main([]) == 0
    assert "fit, validate, test, predict" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


@pytest.mark.slow
def test_help_explains_options(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["fit", "--help"]) == 0
    built = capsys.readouterr().out
    assert built.startswith("usage: python -m caopd_pl [options] fit")
    assert "--model.ema_rate" in built and "--data.calibration" in built
    # Nested dataclass fields show their attribute docstrings, not only type and default.
    assert "Completion tokens at the start of each completion left out of the loss" in " ".join(built.split())
    assert len(list((tmp_path / "caopd_pl" / "help").glob("fit-*.txt"))) == 1
    assert main(["fit", "--help"]) == 0
    assert capsys.readouterr().out == built  # the second call prints the cached text
    with pytest.raises(SystemExit):
        cli_main(["fit", "--help"])
    assert capsys.readouterr().out == built  # what the parser itself prints


def test_help_cache_key_follows_the_source(tmp_path, monkeypatch):
    import caopd_pl.help_cache as help_cache

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(help_cache, "PACKAGE_DIR", tmp_path / "pkg")
    before = help_cache.help_key("fit")
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert help_cache.help_key("fit") != before
    assert help_cache.help_key("test") != help_cache.help_key("fit")


def test_bad_value_names_the_key(tmp_path):
    with pytest.raises(UsageError, match="model.loss.divergence"):
        cli_main(["--config", str(small_config(tmp_path)), "--model.loss.divergence", "kl"], run=False)


@pytest.mark.slow
def test_outputs_follow_default_root_dir(tmp_path):
    (tmp_path / "a").mkdir()
    config = small_config(tmp_path / "a", max_epochs=1)
    assert main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b/checkpoints/last.ckpt").is_file()
    assert (tmp_path / "b/logs/version_0/metrics.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.yaml"]  # nothing written beside it


@pytest.mark.slow
def test_progress_bar_shows_no_version_number(tmp_path):
    cli = cli_main(["--config", str(small_config(tmp_path)), "--trainer.enable_progress_bar", "true"], run=False)
    bar = cli.trainer.progress_bar_callback
    assert bar is not None and "v_num" not in bar.get_metrics(cli.trainer, cli.model)


@pytest.mark.slow
def test_num_threads_sets_torchs_pool_and_rejects_zero(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        cli_main(["--config", str(small_config(tmp_path)), "--num_threads", "1"], run=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(UsageError, match="--num_threads=0"):
        cli_main(["--config", str(small_config(tmp_path)), "--num_threads", "0"], run=False)


def test_no_shipped_config_pins_a_folder_that_default_root_dir_would_not_move():
    # The CLI puts a logger without save_dir under ROOT/logs and a ModelCheckpoint without dirpath under
    # ROOT/checkpoints; a config that names its own folders keeps them when --trainer.default_root_dir moves ROOT.
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
        logger = trainer.get("logger")
        loggers = logger if isinstance(logger, list) else [logger] if isinstance(logger, dict) else []
        assert not any("save_dir" in (entry.get("init_args") or {}) for entry in loggers), path
        assert not any("dirpath" in (c.get("init_args") or {}) for c in trainer.get("callbacks") or []), path


def jsonl_evaluation(root: Path, tiny_run: Path, verifier: str) -> Path:
    """The tiny run's config, evaluating a JSONL task judged by ``verifier``, with ROOT ``root``."""
    rows = [{"prompt": f"{i}+{i}=?", "answer": str(2 * i)} for i in range(4)]
    (root / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["trainer"]["default_root_dir"] = str(root)
    task = {"class_path": "caopd_pl.tasks.jsonl.JsonlTask", "init_args": {"verifier": verifier}}
    task["init_args"] |= {"train": str(root / "rows.jsonl"), "test": str(root / "rows.jsonl")}
    config["data"] |= {"task": task, "test_split": "test", "predict_split": "test"}
    path = root / f"{verifier}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_another_evaluation_of_a_checkpoint_writes_beside_the_first(tiny_run, tmp_path, capsys):
    ckpt = str(tiny_run / "checkpoints/last.ckpt")
    exact, math = (jsonl_evaluation(tmp_path, tiny_run, verifier) for verifier in ("exact", "math"))
    assert main(["test", "--config", str(exact), "--ckpt_path", ckpt]) == 0
    first = (tmp_path / "test/last/metrics.json").read_bytes()
    capsys.readouterr()
    assert main(["test", "--config", str(math), "--ckpt_path", ckpt]) == 0
    assert (tmp_path / "test/last/metrics.json").read_bytes() == first  # the exact verifier's results are kept
    assert (tmp_path / "test/last-v1/metrics.json").is_file()
    err = capsys.readouterr().err
    assert f"{tmp_path / 'test/last'} holds another evaluation (data.task.init_args.verifier is 'exact' there, " in err
    assert main(["test", "--config", str(exact), "--ckpt_path", ckpt]) == 0  # the same evaluation: replaced
    assert main(["test", "--config", str(math), "--ckpt_path", ckpt]) == 0
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["last", "last-v1"]


@pytest.mark.slow
def test_every_output_is_readable_by_others(tmp_path):
    # Under umask 022 every file a command writes is 0644 and every folder 0755, as a plain open/mkdir makes them
    # (atomic writes start from mkstemp's private 0600).
    previous = os.umask(0o022)
    try:
        (tmp_path / "run").mkdir()
        config = small_config(tmp_path / "run", max_epochs=1)
        ckpt = str(tmp_path / "run/checkpoints/last.ckpt")
        assert main(["fit", "--config", str(config)]) == 0
        for command in ("test", "predict"):
            assert main([command, "--config", str(config), "--ckpt_path", ckpt]) == 0
        judged = tmp_path / "run/judged.jsonl"
        predictions = str(tmp_path / "run/predict/last/predictions.jsonl")
        assert main(["verify", "--verifier", "exact", "--input", predictions, "--output", str(judged), "--quiet"]) == 0
        assert main(["report", "--input", str(judged), "--out", str(tmp_path / "run/report")]) == 0
        assert main(["export", "--ckpt_path", ckpt, "--out", str(tmp_path / "run/export")]) == 0
    finally:
        os.umask(previous)
    paths = {str(p.relative_to(tmp_path)): p for p in (tmp_path / "run").rglob("*") if p.name != "config.yaml"}
    assert {"run/test/last/metrics.json", "run/report/reliability.png", "run/export/model.safetensors"} <= set(paths)
    wrong = {name: oct(stat.S_IMODE(p.stat().st_mode)) for name, p in paths.items()}
    wrong = {name: mode for name, mode in wrong.items() if mode != ("0o755" if paths[name].is_dir() else "0o644")}
    assert not wrong


def test_predict_answers_a_prompts_file_with_or_without_a_task(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "What is 2+3?", "source": "mine"},
        {"id": "chat", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]},
    ]
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = small_config(tmp_path)
    assert main(["predict", "--config", str(config), "--data.predict_prompts", str(prompts)]) == 0
    written = [json.loads(line) for line in (tmp_path / "predict/initial/predictions.jsonl").read_text().splitlines()]
    assert [record["id"] for record in written] == ["prompts:0", "chat"] and written[0]["source"] == "mine"
    assert "What is 2+3?" in written[0]["prompt"] and CONFIDENCE_INSTRUCTION in written[0]["prompt"]
    assert "<|im_start|>system\nBe brief.<|im_end|>" in written[1]["prompt"]
    assert all(record["correct"] is None and record["status"] == "unjudged" for record in written)
    assert {"completion", "confidence", "parsed", "readouts"} <= set(written[0])

    no_task = yaml.safe_load(config.read_text())
    del no_task["data"]["task"]
    no_task["trainer"]["default_root_dir"] = str(tmp_path / "no_task")
    config.write_text(yaml.safe_dump(no_task))
    assert main(["predict", "--config", str(config), "--data.predict_prompts", str(prompts)]) == 0
    assert len((tmp_path / "no_task/predict/initial/predictions.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["fit", "--config", str(config)]) == 2  # fit needs a task: one line naming it
    assert "data.task is required" in capsys.readouterr().err
    prompts.write_text('{"question": "no prompt field"}\n')
    assert main(["predict", "--config", str(config), "--data.predict_prompts", str(prompts)]) == 2
    assert f"data.predict_prompts: {prompts}:1: a prompt row needs 'prompt'" in capsys.readouterr().err


def test_a_typo_inside_init_args_gets_a_did_you_mean(tmp_path):
    config = yaml.safe_load(small_config(tmp_path).read_text())
    config["data"]["task"]["init_args"]["num_trian"] = config["data"]["task"]["init_args"].pop("num_train")
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(UsageError) as raised:
        cli_main(["--config", str(path)], run=False)
    message = str(raised.value)
    assert "data.task: class_path 'caopd_pl.tasks.arithmetic.ArithmeticTask': Option 'num_trian'" in message
    assert "did you mean init_args.num_train?" in message and "Union subtypes" not in message


def test_task_help_takes_a_short_name_and_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--data.task.help", "JsonlTask"])
    out = capsys.readouterr().out
    assert "Help for --data.task.help=caopd_pl.tasks.jsonl.JsonlTask" in out
    assert "Source of the validation split." in out and "Rows kept per split" in out
