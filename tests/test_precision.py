"""Low precision through the real entry point: bf16 weights, bf16-mixed, and the teacher's dtype.

The student is a tiny model of a real architecture saved with ``save_pretrained`` and loaded from its directory, as
a researcher's checkpoint is. This CPU has no native bf16, so shapes stay tiny (character vocabulary, width 32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from lightning.pytorch import Callback
from test_cli import small_config

from caopd_pl.cli import cli_main
from caopd_pl.models.loading import ModelConfig
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.models.tokenizer import build_char_tokenizer


def save_local_checkpoint(
    directory: Path, architecture: str = "qwen3", width: int = 32, scale: float | None = None
) -> Path:
    """A tiny random-weight model of ``architecture`` and the character tokenizer, saved as a Hugging Face dir.

    Two heads: ``width`` 64 gives vLLM's CPU attention the head size of 32 it needs. ``scale`` redraws the matrices
    ~ N(0, scale^2): large weights make greedy paths long and prompt-dependent, so comparing decodes means something.
    """
    tokenizer = build_char_tokenizer()
    spec = TinyModelConfig(architecture=architecture, hidden_size=width, num_layers=2, num_heads=2, num_kv_heads=1)
    model = build_tiny_model(spec, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    if scale is not None:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() >= 2:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def local_model_config(
    root: Path,
    max_epochs: int = 1,
    model: dict[str, Any] | None = None,
    width: int = 32,
    scale: float | None = None,
    **module: Any,
) -> tuple[Path, Path]:
    """``small_config`` with the student loaded from a local checkpoint dir, no warm start; (config, base dir)."""
    base = save_local_checkpoint(root / "base", width=width, scale=scale)
    path = small_config(root, max_epochs=max_epochs)
    config = yaml.safe_load(path.read_text())
    config["model"]["model"] = {"name_or_path": str(base), **(model or {})}
    config["model"] |= {"warm_start": None, **module}
    path.write_text(yaml.safe_dump(config))
    return path, base


class StepRecorder(Callback):
    """Records, at every training step, the student's dtypes and the loss."""

    def __init__(self) -> None:
        self.student_dtypes: set[torch.dtype] = set()
        self.teacher_dtypes: set[torch.dtype] = set()
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.student_dtypes |= {p.dtype for p in module.student.parameters()}
        self.teacher_dtypes |= {p.dtype for p in module.teacher.parameters()}
        self.losses.append(float(outputs["loss"]))


def fit(config: Path, *overrides: str) -> tuple[Any, StepRecorder]:
    cli = cli_main(["--config", str(config), *overrides], run=False)
    recorder = StepRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, recorder


def assert_reloads(cli, root: Path) -> None:
    """The last checkpoint holds both models and loads back into a fresh module, parameter for parameter."""
    fresh = type(cli.model).load_from_checkpoint(root / "checkpoints/last.ckpt", map_location="cpu")
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name].to(value.dtype), value, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize(("teacher_dtype", "expected_teacher"), [(None, torch.float32), ("bfloat16", torch.bfloat16)])
def test_bf16_mixed_keeps_fp32_student_weights(tmp_path, teacher_dtype, expected_teacher):
    # Under autocast the teacher's matmuls run in bf16 anyway: a bf16 teacher halves its memory for nothing.
    module = {} if teacher_dtype is None else {"teacher_dtype": teacher_dtype}
    config, _ = local_model_config(tmp_path, **module)
    cli, recorder = fit(config, "--trainer.precision", "bf16-mixed")

    assert recorder.student_dtypes == {torch.float32} and recorder.teacher_dtypes == {expected_teacher}
    assert recorder.losses and all(torch.isfinite(torch.tensor(recorder.losses)))
    assert_reloads(cli, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "teacher_dtype", "expected_teacher"),
    [("32-true", None, torch.bfloat16), ("32-true", "float32", torch.float32), ("bf16-true", "float32", torch.float32)],
)
def test_bf16_weights(tmp_path, precision, teacher_dtype, expected_teacher):
    # The paper's setting is bf16 weights, not mixed precision; the teacher in the student's dtype or in fp32.
    module = {} if teacher_dtype is None else {"teacher_dtype": teacher_dtype}
    config, _ = local_model_config(tmp_path, model={"dtype": "bfloat16"}, **module)
    cli, recorder = fit(config, "--trainer.precision", precision)

    assert recorder.student_dtypes == {torch.bfloat16} and recorder.teacher_dtypes == {expected_teacher}
    assert recorder.losses and all(torch.isfinite(torch.tensor(recorder.losses)))
    assert_reloads(cli, tmp_path)


def test_teacher_dtype_is_checked():
    with pytest.raises(ValueError, match="model.teacher_dtype='float64'"):
        from caopd_pl.module import CaOPDModule

        CaOPDModule(teacher_dtype="float64")


def test_ema_rounding_generator_state_is_checkpointed():
    from caopd_pl.module import CaOPDModule

    tiny = ModelConfig(tiny=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1))
    module = CaOPDModule(model=tiny, teacher_dtype="bfloat16")
    assert {p.dtype for p in module.teacher.parameters()} == {torch.bfloat16}
    torch.rand(3, generator=module._ema_generator())  # the rounding has drawn some numbers
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)

    resumed = CaOPDModule(model=tiny, teacher_dtype="bfloat16")
    resumed.on_load_checkpoint(checkpoint)
    generator = module._ema_generator()
    assert torch.equal(torch.rand(5, generator=resumed._ema_generator()), torch.rand(5, generator=generator))


class AdapterRecorder(Callback):
    """Inside training: the dtypes of the base, of each adapter and of the optimizer's state, and how many elements
    of the student's adapters each step moved."""

    def __init__(self) -> None:
        self.dtypes: dict[str, set[torch.dtype]] = {"base": set(), "student": set(), "teacher": set(), "state": set()}
        self.moved: list[dict[str, float]] = []

    def _adapters(self, module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in module.student.named_parameters() if ".student." in n}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.before = self._adapters(module)
        for name, param in module.student.named_parameters():
            side = "student" if ".student." in name else "teacher" if ".teacher." in name else "base"
            self.dtypes[side].add(param.dtype)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        after = self._adapters(module)
        moved = {}
        for kind in ("lora_A", "lora_B"):
            names = [n for n in after if kind in n]
            changed = sum(int((after[n] != self.before[n]).sum()) for n in names)
            moved[kind] = changed / sum(after[n].numel() for n in names)
        self.moved.append(moved)
        for state in trainer.optimizers[0].state.values():
            self.dtypes["state"] |= {v.dtype for v in state.values() if torch.is_tensor(v) and v.dim() > 0}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed", "32-true"])
def test_lora_adapters_and_their_optimizer_state_stay_float32_in_training(tmp_path, precision):
    # bf16-true casts the whole module after construction: the adapters used to train in bf16 there, where one AdamW
    # step at lr 2e-5 moves a few of their elements (it moves all in fp32).
    config, _ = local_model_config(tmp_path, model={"dtype": "bfloat16"}, lora={"rank": 4, "alpha": 8.0}, ema_rate=0.5)
    cli = cli_main(
        ["--config", str(config), "--trainer.precision", precision, "--model.optimizer.lr", "2e-5"], run=False
    )
    recorder = AdapterRecorder()
    cli.trainer.callbacks.append(recorder)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert recorder.dtypes["student"] == recorder.dtypes["teacher"] == recorder.dtypes["state"] == {torch.float32}
    assert recorder.dtypes["base"] == {torch.bfloat16}
    # lora_B starts at zero, so the first step's gradient reaches lora_B only; from the second on, both move.
    assert len(recorder.moved) >= 2 and recorder.moved[0]["lora_B"] > 0.9
    assert all(step["lora_A"] > 0.9 and step["lora_B"] > 0.9 for step in recorder.moved[1:]), recorder.moved
