"""A killed ``fit`` resumes bit-identically: checkpoints every epoch, written atomically; epochs replay exactly."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO, assert_resumed_like, fit, resume_config, small_config, wait_for

from caopd_pl.__main__ import main
from caopd_pl.cli import cli_main
from caopd_pl.datamodule import RolloutDataModule
from caopd_pl.errors import DiskFull, UsageError
from caopd_pl.resume import (
    CONFIG_KEY,
    RESUME_MAY_CHANGE,
    AtomicCheckpointIO,
    changed_settings,
    check_same_experiment,
    epoch_seed,
)
from caopd_pl.sampling import EpochPermutation


def rng_by_batch(path: Path) -> dict[tuple[int, int], str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(row["epoch"], row["batch"]): row["rng"] for row in rows}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run_bit_for_bit(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    fit(resume_config(straight))

    marker = killed / "paused.json"
    process = fit(resume_config(killed, pause_epoch=1, pause_batch=0, marker=str(marker)), wait=False)
    wait_for(marker, process)
    os.kill(process.pid, signal.SIGKILL)  # a real kill, in the middle of epoch 1 (after its first optimizer step)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    paused = json.loads(marker.read_text())
    saved = torch.load(killed / "checkpoints/last.ckpt", weights_only=False)
    assert saved["epoch"] == 0 and saved["global_step"] < paused["step"]  # epoch 1's progress was lost

    fit(resume_config(killed), "--ckpt_path", "last")

    assert_resumed_like(straight, killed)
    # What dropout would draw: the global generator at every batch of the replayed epochs is the same.
    straight_rng, killed_rng = rng_by_batch(straight / "rng.jsonl"), rng_by_batch(killed / "rng.jsonl")
    assert {key: killed_rng[key] for key in straight_rng if key[0] >= 1} == {
        key: value for key, value in straight_rng.items() if key[0] >= 1
    }


def test_epoch_permutation_is_the_same_at_every_iter_and_differs_between_epochs():
    sampler = EpochPermutation(50, seed=7)
    first = list(sampler)
    assert list(sampler) == first and sorted(first) == list(range(50))
    assert list(EpochPermutation(50, seed=8)) != first


@pytest.mark.slow
def test_train_dataloader_order_does_not_depend_on_how_often_lightning_iterates_it(tmp_path):
    cli = cli_main(["--config", str(small_config(tmp_path)), "--trainer.logger", "false"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)  # attaches the trainer; 2 short epochs
    loader = cli.datamodule.train_dataloader()
    state = torch.get_rng_state()
    orders = [[batch["student_ids"].tolist() for batch in loader] for _ in range(3)]
    assert orders[0] == orders[1] == orders[2]
    assert torch.equal(torch.get_rng_state(), state)  # iter() drew nothing from the global generator


@pytest.mark.slow
def test_ckpt_path_last_without_a_checkpoint_fails_in_one_line(tmp_path, capsys):
    config = small_config(tmp_path)
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"caopd_pl fit: error: --ckpt_path=last: no last checkpoint in {tmp_path / 'checkpoints'}; check "
        "trainer.default_root_dir, or leave out --ckpt_path to start a fresh run"
    )
    assert not (tmp_path / "logs").exists()  # nothing trained


@pytest.mark.slow
def test_ckpt_path_last_names_the_other_checkpoints_it_finds(tmp_path, capsys):
    config = small_config(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save({}, tmp_path / "checkpoints/epoch=3-step=8.ckpt")
    assert main(["fit", "--config", str(config), "--ckpt_path", "last"]) == 2
    assert f"(other checkpoints there: {tmp_path / 'checkpoints/epoch=3-step=8.ckpt'}; give one" in (
        capsys.readouterr().err
    )


def test_every_shipped_fit_config_writes_last_ckpt_every_epoch():
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if "trainer" not in config or "layers" in path.parts:  # continual runner configs (the runner saves each
            continue  # stage itself) and layers over a fit config (its base's callbacks hold)
        (checkpoint,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
        init_args = checkpoint["init_args"]
        assert init_args.get("save_last") in (True, "link") and init_args.get("save_top_k", 1) != 0, path
        assert init_args.get("every_n_epochs", 1) == 1 and not init_args.get("every_n_train_steps"), path


@pytest.mark.slow
def test_cli_trainer_writes_checkpoints_through_a_temporary_file_beside_the_target(tmp_path, monkeypatch):
    cli = cli_main(["--config", str(small_config(tmp_path)), "--trainer.logger", "false"], run=False)
    temporaries = []
    mkstemp = tempfile.mkstemp

    def recorded(*args, **kwargs):
        handle, name = mkstemp(*args, **kwargs)
        temporaries.append(Path(name))
        return handle, name

    # Lightning's writer makes its temporary file in the system's temporary folder: on another filesystem than the
    # checkpoints, its final move is a copy, which a full disk or a kill leaves torn.
    monkeypatch.setattr(tempfile, "mkstemp", recorded)
    target = tmp_path / "checkpoints/last.ckpt"
    cli.trainer.strategy.checkpoint_io.save_checkpoint({"weights": torch.arange(4)}, target)
    assert temporaries and all(path.parent == target.parent for path in temporaries)
    assert torch.equal(torch.load(target)["weights"], torch.arange(4))
    assert [path.name for path in target.parent.iterdir()] == ["last.ckpt"]


def test_a_write_that_runs_out_of_disk_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints/last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, target)

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DiskFull, match=f"no space left on device writing '{target}'"):  # an OSError, one line
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, target)
    monkeypatch.undo()
    assert torch.load(target) == {"epoch": 1}
    assert [path.name for path in target.parent.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_epoch_seed_differs_by_epoch_and_fits_numpy():
    seeds = {epoch_seed(seed, epoch) for seed in (0, 1, 2**40) for epoch in range(100)}
    assert len(seeds) == 300 and all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.slow
def test_resume_samples_no_rollouts_for_the_epoch_its_checkpoint_finished(tmp_path, monkeypatch):
    assert main(["fit", "--config", str(small_config(tmp_path, max_epochs=1))]) == 0
    sampled = []
    build_epoch = RolloutDataModule.build_epoch

    def counted(self, prompts, epoch, rank=0):
        sampled.append(epoch)
        return build_epoch(self, prompts, epoch, rank)

    monkeypatch.setattr(RolloutDataModule, "build_epoch", counted)
    assert main(["fit", "--config", str(small_config(tmp_path, max_epochs=3)), "--ckpt_path", "last"]) == 0
    assert sampled == [1, 2]  # not epoch 0 again, which Lightning re-enters only to close it


@pytest.mark.slow
def test_ckpt_path_last_without_a_checkpoint_callback_fails_in_one_line(tmp_path, capsys):
    config = small_config(tmp_path)
    assert main(["fit", "--config", str(config), "--trainer.callbacks", "[]", "--ckpt_path", "last"]) == 2
    assert capsys.readouterr().err == (
        "caopd_pl fit: error: --ckpt_path=last: the config has no ModelCheckpoint callback to find a last checkpoint "
        "with; add one with save_last: true (as configs/quickstart.yaml does), or give --ckpt_path FILE.ckpt\n"
    )


@pytest.mark.slow
def test_ckpt_path_last_that_links_to_a_removed_checkpoint_fails_in_one_line(tmp_path, capsys):
    # save_last: link, killed after the epoch checkpoint it pointed to was replaced and before it was relinked.
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.ckpt").symlink_to("epoch=1-step=4.ckpt")
    torch.save({}, tmp_path / "checkpoints/epoch=2-step=6.ckpt")
    assert main(["fit", "--config", str(small_config(tmp_path)), "--ckpt_path", "last"]) == 2
    assert f"other checkpoints there: {tmp_path / 'checkpoints/epoch=2-step=6.ckpt'}; give one" in (
        capsys.readouterr().err
    )


def resumable_copy(tiny_run: Path, root: Path) -> Path:
    """The tiny run's checkpoints and config under ``root`` (its own run to resume); returns the config."""
    shutil.copytree(tiny_run / "checkpoints", root / "checkpoints")
    config = root / "config.yaml"
    config.write_text((tiny_run / "config.yaml").read_text().replace(str(tiny_run), str(root)))
    return config


CHANGES = {
    "model size": (["--model.model.tiny.hidden_size", "64"], "model.model.tiny.hidden_size is 32 there, 64 here"),
    "task": (["--data.task.init_args.levels", "[1+1]"], "data.task.init_args.levels is ['1+1', '2+1', '2+2', '2*1']"),
    "calibration": (["--data.calibration", "none"], "data.calibration is 'empirical' there, 'none' here"),
    "optimizer": (
        ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.1"],
        "model.optimizer.class_path is 'torch.optim.AdamW' there, 'torch.optim.SGD' here",
    ),
    "seed": (["--seed_everything", "1"], "seed_everything is 0 there, 1 here"),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_resume_that_changes_the_experiment_is_refused_in_one_line(change, tiny_run, tmp_path, capsys):
    config = resumable_copy(tiny_run, tmp_path)
    capsys.readouterr()
    args, expected = CHANGES[change]
    assert main(["fit", "--config", str(config), "--ckpt_path", "last", "--trainer.max_epochs", "3", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caopd_pl fit: error: --ckpt_path='last' was trained with other ")
    assert expected in err[0] and "docs/errors.md, Resuming" in err[0]
    assert not (tmp_path / "logs").exists()  # refused before anything ran


@pytest.mark.slow
def test_a_checkpoint_without_a_saved_config_is_compared_by_its_model_settings(tiny_run, tmp_path, capsys):
    config = resumable_copy(tiny_run, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)
    del checkpoint[CONFIG_KEY]  # as written before configs were saved
    torch.save(checkpoint, tmp_path / "checkpoints/last.ckpt")
    capsys.readouterr()
    args = ["fit", "--config", str(config), "--ckpt_path", "last", "--model.model.tiny.hidden_size", "64"]
    assert main(args) == 2
    assert "model.model.tiny.hidden_size is 32 there, 64 here" in capsys.readouterr().err


@pytest.mark.slow
def test_a_resume_may_train_longer_log_elsewhere_and_evaluate_otherwise(tiny_run, tmp_path):
    config = resumable_copy(tiny_run, tmp_path / "first")
    elsewhere = tmp_path / "elsewhere"
    args = ["--trainer.max_epochs", "3", "--trainer.default_root_dir", str(elsewhere), "--model.eval_max_new_tokens"]
    ckpt = tmp_path / "first/checkpoints/last.ckpt"
    assert main(["fit", "--config", str(config), "--ckpt_path", str(ckpt), *args, "10"]) == 0
    resumed = torch.load(elsewhere / "checkpoints/last.ckpt", weights_only=False)
    assert resumed["epoch"] == 2 and (elsewhere / "logs/version_0/metrics.csv").is_file()
    # The config's evaluation setting is used as given (Lightning would put back the checkpoint's 8).
    assert resumed["hyper_parameters"]["eval_max_new_tokens"] == 10
    assert resumed[CONFIG_KEY]["model"]["eval_max_new_tokens"] == 10


def test_changed_settings_names_what_differs_and_passes_over_what_may():
    saved = {"model": {"lora": None, "tiny": {"width": 32}, "eval_max_new_tokens": 8}, "trainer": {"max_epochs": 2}}
    current = {"model": {"lora": {"r": 8}, "tiny": {"width": 32, "new_field": 1}, "eval_max_new_tokens": 24}}
    current |= {"trainer": {"max_epochs": 9}, "ckpt_path": "last"}
    assert changed_settings(saved, current, RESUME_MAY_CHANGE) == [("model.lora", None, {"r": 8})]


def test_a_checkpoint_from_before_the_divergence_was_an_object_resumes_under_the_same_loss():
    loss = {"average": "token", "skip_first_tokens": 3, "chunk_size": 64, "temperature": 1.0}

    def config(**settings):
        return {"model": {"loss": {**loss, **settings}}}

    saved = {CONFIG_KEY: config(divergence="jsd", beta=0.3)}  # written when beta sat beside the name
    same = config(divergence={"class_path": "caopd_pl.losses.JSD", "init_args": {"beta": 0.3}})
    check_same_experiment(saved, same, "old.ckpt")  # another spelling of the same divergence
    forward = {CONFIG_KEY: config(divergence="forward", beta=0.5)}
    check_same_experiment(forward, config(divergence="caopd_pl.losses.ForwardKL"), "old.ckpt")
    other = config(divergence={"class_path": "jsd", "init_args": {"beta": 0.4}})
    with pytest.raises(UsageError, match=r"model.loss.divergence.init_args.beta is 0.3 there, 0.4 here"):
        check_same_experiment(saved, other, "old.ckpt")
