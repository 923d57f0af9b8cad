"""A new divergence is one class: the squared Hellinger distance below is defined here and nowhere else.

It gives a per-token value only, so its gradient comes from autograd one chunk at a time; the loss, ``LossConfig``
and a Lightning training step of :class:`CaOPDModule` take it by name. A divergence with a parameter of its own,
written in a user's file, trains from one config line through the real entry point. The built-ins' closed-form
gradients are checked against the same autograd path.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from helpers import distill_batch, metrics_rows, small_config, user_module
from lightning.pytorch import Callback
from torch.utils.data import DataLoader

from caopd_pl.cli import cli_main
from caopd_pl.errors import UsageError
from caopd_pl.losses import (
    DIVERGENCES,
    JSD,
    Divergence,
    LossConfig,
    logit_grad_by_autograd,
    masked_mean_divergence,
)
from caopd_pl.models.loading import ModelConfig, final_hidden_states
from caopd_pl.models.tiny import TinyModelConfig
from caopd_pl.module import CaOPDModule


class SquaredHellinger(Divergence):
    """H^2(p, q) = 1 - sum_v sqrt(p_v q_v), in [0, 1]; 0 when p == q."""

    name = "test_squared_hellinger"

    def per_token(self, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return 1 - ((log_p + log_q) / 2).exp().sum(-1)  # (N,)


@pytest.fixture(autouse=True, scope="module")
def _registered_only_here():
    """The class registered itself at import (collection); other modules' tests see the built-in registry."""
    DIVERGENCES.add(SquaredHellinger)
    yield
    DIVERGENCES.remove(SquaredHellinger.name)


def naive_hellinger(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """(N, V), (N, V) -> (N,) from the probabilities, written independently of the class."""
    return 1 - (logits.softmax(-1) * teacher_logits.softmax(-1)).sqrt().sum(-1)


def _padded_batch(dtype: torch.dtype = torch.float64, b: int = 3, t: int = 9, h: int = 16, v: int = 29):
    """Student and teacher hidden states, weights and masks selecting the same 14 completion positions."""
    hidden = torch.randn(b, t, h, dtype=dtype, requires_grad=True)  # (B, Ts, H)
    weight = torch.randn(v, h, dtype=dtype, requires_grad=True)  # (V, H)
    teacher_hidden, teacher_weight = torch.randn(b, t + 3, h, dtype=dtype), torch.randn(v, h, dtype=dtype)
    mask, teacher_mask = torch.zeros(b, t, dtype=torch.bool), torch.zeros(b, t + 3, dtype=torch.bool)
    mask[0, 2:8] = mask[2, 1:9] = True
    teacher_mask[0, 5:11] = teacher_mask[2, 4:12] = True
    return hidden, weight, teacher_hidden, teacher_weight, mask, teacher_mask


def test_defining_the_class_registers_it():
    assert DIVERGENCES["test_squared_hellinger"] is SquaredHellinger and not SquaredHellinger.has_closed_form()
    assert list(DIVERGENCES)[:3] == ["reverse", "forward", "jsd"]


@pytest.mark.parametrize("chunk_size", [1, 5, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_new_divergence_matches_naive_full_logits_autograd(chunk_size, temperature):
    hidden, weight, teacher_hidden, teacher_weight, mask, teacher_mask = _padded_batch()
    mean, count = masked_mean_divergence(
        hidden, weight, teacher_hidden, teacher_weight, mask, teacher_mask,
        divergence="test_squared_hellinger", chunk_size=chunk_size, temperature=temperature,
    )  # fmt: skip
    grads = torch.autograd.grad(mean, [hidden, weight])
    logits = hidden[mask] @ weight.T / temperature  # (14, V)
    teacher_logits = teacher_hidden[teacher_mask] @ teacher_weight.T / temperature  # (14, V)
    naive = naive_hellinger(logits, teacher_logits).mean()
    naive_grads = torch.autograd.grad(naive, [hidden, weight])
    assert count.item() == 14 and mean.item() > 0
    torch.testing.assert_close(mean, naive, atol=1e-12, rtol=1e-10)
    for got, want in zip(grads, naive_grads):
        assert got.abs().max() > 0
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_new_divergence_is_zero_for_identical_inputs_and_float32_for_bf16_weights():
    hidden, weight, _, _, mask, _ = _padded_batch(torch.bfloat16)
    teacher = hidden.detach(), weight.detach()
    mean, _ = masked_mean_divergence(hidden, weight, *teacher, mask, mask, divergence="test_squared_hellinger")
    grads = torch.autograd.grad(mean, [hidden, weight])
    assert mean.dtype == torch.float32 and abs(mean.item()) < 1e-6
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.bfloat16]
    assert all(g.float().abs().max() < 1e-6 for g in grads)


def test_loss_config_builds_the_divergence_once_from_a_name_a_class_path_or_a_mapping():
    assert type(LossConfig(divergence="test_squared_hellinger").divergence) is SquaredHellinger
    assert type(LossConfig(divergence=f"{__name__}.SquaredHellinger").divergence) is SquaredHellinger
    built = LossConfig(divergence={"class_path": "jsd", "init_args": {"beta": 0.3}}).divergence
    assert type(built) is JSD and built.beta == 0.3
    given = JSD(beta=0.2)
    assert LossConfig(divergence=given).divergence is given
    with pytest.raises(ValueError, match=r"model.loss.divergence='hellinger' is not a registered divergence") as err:
        LossConfig(divergence="hellinger")
    assert "'test_squared_hellinger'" in str(err.value) and "define a Divergence subclass" in str(err.value)
    assert "did you mean 'test_squared_hellinger'?" in str(err.value) or "did you mean" not in str(err.value)
    with pytest.raises(ValueError, match=r"did you mean 'forward'\?"):
        LossConfig(divergence="froward")
    with pytest.raises(ValueError, match=r"^model.loss.divergence='jsd': .*unexpected keyword argument 'alpha'"):
        LossConfig(divergence={"class_path": "jsd", "init_args": {"alpha": 0.3}})


def test_a_name_is_optional_and_never_shared():
    class Nameless(Divergence):  # not registered: its class path names it
        def per_token(self, log_p, log_q):
            return (log_p - log_q).abs().sum(-1)

    assert Nameless not in DIVERGENCES.values()
    with pytest.raises(TypeError, match="'reverse' .* is taken by ReverseKL"):

        class AnotherReverse(Divergence):
            name = "reverse"

    assert "test_squared_hellinger" in DIVERGENCES and DIVERGENCES["reverse"].__name__ == "ReverseKL"


class LossRecorder(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_caopd_module_trains_with_the_new_divergence(tmp_path):
    tiny = ModelConfig(tiny=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1))
    loss = LossConfig(divergence="test_squared_hellinger", skip_first_tokens=0, chunk_size=4)
    module = CaOPDModule(model=tiny, loss=loss, ema_rate=0.5)
    batch = distill_batch(60)
    student_ids, teacher_ids = batch["student_ids"], batch["teacher_ids"]
    student_mask, teacher_mask = batch["student_mask"], batch["teacher_mask"]
    with torch.no_grad():  # the first step's loss, from full logits of the untrained student and teacher
        logits = final_hidden_states(module.student, student_ids, batch["student_attention"])[student_mask]
        teacher_logits = final_hidden_states(module.teacher, teacher_ids, batch["teacher_attention"])[teacher_mask]
        logits = logits @ module.student.get_output_embeddings().weight.T  # (10, V)
        teacher_logits = teacher_logits @ module.teacher.get_output_embeddings().weight.T  # (10, V)
        want = naive_hellinger(logits, teacher_logits).mean()
    start = [p.detach().clone() for p in (module.student.lm_head.weight, module.teacher.lm_head.weight)]

    recorder = LossRecorder()
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader([batch], batch_size=None))

    assert len(recorder.losses) == 2
    torch.testing.assert_close(torch.tensor(recorder.losses[0]), want)
    assert not torch.equal(module.student.lm_head.weight, start[0])  # the optimizer stepped the student
    assert not torch.equal(module.teacher.lm_head.weight, start[1])  # and the EMA moved the teacher


# ---- every built-in's closed form against its own autograd fallback ------------------------------------------------


@pytest.mark.parametrize("name", [name for name, cls in DIVERGENCES.items() if cls.has_closed_form()])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_closed_form_gradient_equals_autograd_of_per_token(name, dtype):
    divergence = JSD(beta=0.3) if name == "jsd" else DIVERGENCES.build(name)
    logits, teacher_logits = torch.randn(13, 41, dtype=dtype) * 3, torch.randn(13, 41, dtype=dtype) * 3  # (c, V)
    value, grad = logit_grad_by_autograd(divergence, logits, teacher_logits)
    log_p, log_q = logits.log_softmax(-1), teacher_logits.log_softmax(-1)
    closed_value, closed_grad = divergence.closed_form(log_p.clone(), log_q.clone())
    tolerance = dict(atol=1e-12, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-4)
    assert closed_value.dtype == closed_grad.dtype == dtype
    torch.testing.assert_close(closed_value, value, **tolerance)
    torch.testing.assert_close(closed_value, divergence.per_token(log_p, log_q), **tolerance)  # (c,): per row
    torch.testing.assert_close(closed_grad, grad, **tolerance)


# ---- a divergence in a user's own file, from one config line -------------------------------------------------------

SKEWED_KL = """
import math

import torch

from caopd_pl.losses import Divergence


class SkewedKL(Divergence):
    \"\"\"KL(q || alpha p + (1 - alpha) q): forward KL against a mixture, finite wherever q is.\"\"\"

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha

    def per_token(self, log_p, log_q):  # (N, V), (N, V) -> (N,)
        log_m = torch.logaddexp(log_p + math.log(self.alpha), log_q + math.log1p(-self.alpha))
        return (log_q.exp() * (log_q - log_m)).sum(-1)
"""


@pytest.fixture
def user_divergence(tmp_path, monkeypatch):
    """The skewed KL in a module of the user's own (a file on sys.path), not in the project."""
    user_module(tmp_path, monkeypatch, "my_skewed_kl", SKEWED_KL)
    return "my_skewed_kl.SkewedKL"


def _config_with_divergence(root, divergence) -> str:
    config = small_config(root, max_epochs=1)
    settings = yaml.safe_load(config.read_text())
    settings["model"]["loss"]["divergence"] = divergence
    config.write_text(yaml.safe_dump(settings))
    return str(config)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_users_divergence_with_a_parameter_trains_from_one_config_line(tmp_path, user_divergence):
    spec = {"class_path": user_divergence, "init_args": {"alpha": 0.25}}
    cli = cli_main(["fit", "--config", _config_with_divergence(tmp_path, spec)])

    divergence = cli.model.loss_config.divergence
    assert type(divergence).__module__ == "my_skewed_kl" and divergence.alpha == 0.25  # built once, as configured
    losses = [float(row["train/loss"]) for row in metrics_rows(tmp_path) if row.get("train/loss")]
    assert losses and all(loss >= 0 for loss in losses)  # a divergence, trained through the real entry point
    (saved,) = tmp_path.glob("logs/version_*/config.yaml")
    assert yaml.safe_load(saved.read_text())["model"]["loss"]["divergence"] == spec  # the resolved config says so


def test_a_users_divergence_with_a_wrong_parameter_fails_in_one_line(tmp_path, user_divergence):
    spec = {"class_path": user_divergence, "init_args": {"alpah": 0.25}}
    with pytest.raises(UsageError, match=r"^model.loss.divergence='my_skewed_kl.SkewedKL': .*'alpah'") as err:
        cli_main(["--config", _config_with_divergence(tmp_path, spec)], run=False)
    assert "\n" not in str(err.value)
