"""LoRA (through peft): the student trains a low-rank adapter over a frozen base; the EMA teacher is a second adapter.

With ``model.lora`` set, two LoRA adapters are injected into the one student model, in place: ``student`` (the only
trainable tensors) and ``teacher`` (a frozen copy of it, moved towards the student by the EMA after every optimizer
step). The base weights exist once and both adapters read them, so the teacher costs two small matrices per adapted
layer instead of a second model; the EMA touches adapter tensors only. The teacher's forward switches every adapted
layer to the ``teacher`` adapter, in eval mode and under no_grad, then switches back (:func:`teacher_adapter`).

The model stays a plain transformers model with peft layers inside it (``inject_adapter_in_model``, no ``PeftModel``
wrapper), so the loss's ``base_model`` / ``get_output_embeddings`` and the rollout engines see the student as before.
Checkpoints hold the base and both adapters (``...q_proj.lora_A.student.weight``, ``...lora_A.teacher.weight``).
Engines and export get the student's adapter merged into the base weights (:func:`iter_merged_parameters`,
:func:`merge_adapter`), under the base's checkpoint names.

The paper trains all weights; LoRA departs from it to fit large students on fewer GPUs (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

STUDENT, TEACHER = "student", "teacher"
"""The adapters' names (they appear in checkpoint keys)."""


@dataclass(frozen=True)
class LoraSettings:
    """Low-rank adapters on the student (peft LoRA); the EMA teacher becomes an adapter over the same base."""

    rank: int = 16
    """Rank r of each adapter's update B @ A."""
    alpha: float = 32.0
    """Scale of the update: alpha / rank."""
    dropout: float = 0.0
    """Dropout on the adapter's input while the student trains (never in the teacher's forward)."""
    target_modules: str | list[str] = "all-linear"
    """Modules that get adapters: ``all-linear`` (every linear layer but the output layer) or a list of names
    (``[q_proj, v_proj]``). The output layer cannot take one: the chunked loss reads its weight directly."""
    options: dict[str, Any] = field(default_factory=dict)
    """More of peft's ``LoraConfig`` fields, as named there: ``exclude_modules``, ``layers_to_transform``,
    ``layers_pattern``, ``rank_pattern``, ``alpha_pattern``, ``use_rslora``, ``init_lora_weights``, ``bias``
    (``none`` only). Refused, in one line: ``modules_to_save`` (full trainable copies the EMA teacher would not
    cover), ``use_dora`` and other adapter kinds (the merge sent to the engines is plain LoRA's), and the fields
    above (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``)."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"model.lora: rank={self.rank}, alpha={self.alpha}, dropout={self.dropout}; need rank >= 1, "
                "alpha > 0 and dropout in [0, 1)"
            )
        for key, value in self.options.items():
            if key not in LORA_OPTIONS:
                raise ValueError(f"model.lora.options.{key}: {LORA_OPTIONS_REFUSED.get(key, _UNKNOWN_OPTION)}")
            if key == "bias" and value != "none":
                raise ValueError(f"model.lora.options.bias={value!r}: only 'none' (trainable biases are not adapters)")


LORA_OPTIONS = frozenset(
    {
        "exclude_modules",
        "layers_to_transform",
        "layers_pattern",
        "rank_pattern",
        "alpha_pattern",
        "use_rslora",
        "init_lora_weights",
        "bias",
    }
)
"""peft ``LoraConfig`` fields ``model.lora.options`` passes through."""
LORA_OPTIONS_REFUSED = {
    "modules_to_save": "full trainable copies of modules, which the EMA teacher adapter does not cover; not offered",
    "use_dora": "DoRA's merge differs from LoRA's, which is what the engines and export get; not offered",
    "r": "set model.lora.rank",
    "lora_alpha": "set model.lora.alpha",
    "lora_dropout": "set model.lora.dropout",
    "target_modules": "set model.lora.target_modules",
}
_UNKNOWN_OPTION = f"not a LoraConfig field this code passes on; one of {sorted(LORA_OPTIONS)}"


def add_adapters(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Inject the ``student`` and ``teacher`` adapters into ``model`` in place; returns ``model``.

    Afterwards the student adapter is active and its tensors are the only ones that require grad; the teacher
    adapter starts as an exact copy of the student's (so teacher == student, as with a full-copy teacher). Adapters
    are float32 whatever the base's dtype (a bf16 base stays bf16): their updates and the EMA need the precision,
    and they are small.

    Raises:
        ValueError: ``target_modules`` matches no layer, or matches the output layer.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import cast_adapter_dtype

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        **({"bias": "none"} | settings.options),
    )
    try:
        for name in (STUDENT, TEACHER):
            with warnings.catch_warnings():  # "Already found a `peft_config`": a second adapter is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(config, model, adapter_name=name)
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        raise ValueError(f"model.lora.target_modules={settings.target_modules!r}: {str(err).splitlines()[0]}") from err
    if _is_lora_layer(model.get_output_embeddings()):
        raise ValueError(
            f"model.lora.target_modules={settings.target_modules!r} adapts the output layer; the chunked loss reads "
            "its weight directly: leave lm_head out"
        )
    for layer in lora_layers(model):
        layer.set_adapter(STUDENT)
    for name in (STUDENT, TEACHER):  # a bf16/fp16 base gets float32 adapters, as peft's get_peft_model gives
        cast_adapter_dtype(model, adapter_name=name)
    teachers, students = adapter_pairs(model)
    with torch.no_grad():
        for teacher, student in zip(teachers, students):
            teacher.copy_(student)
    _freeze_all_but_student(model)
    return model


def keep_adapters_float32(model: torch.nn.Module, values: Mapping[str, torch.Tensor] | None = None) -> None:
    """Cast both adapters of ``model`` back to float32, in place (the base keeps its dtype), and give them ``values``
    (float32 adapter tensors by ``model``'s parameter names, a checkpoint's) when given.

    Lightning's ``bf16-true``/``16-true`` precision casts the whole module after it is built, adapters included; this
    runs after that and before the optimizer is made, so the adapters train, and keep their AdamW state, in float32.
    A single-device resume restores the checkpoint before that cast, which rounds its adapters to bf16: given the
    checkpoint's as ``values``, the run continues from them exactly (the teacher adapter, GRPO's KL reference,
    included).
    """
    with torch.no_grad():
        for layer in lora_layers(model):
            for name in (STUDENT, TEACHER):
                for container in (layer.lora_A, layer.lora_B):
                    if name in container:
                        container[name].float()
        if values:
            parameters = dict(model.named_parameters())
            for key, value in values.items():
                parameters[key].copy_(value)


def has_adapters(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds peft LoRA layers (cheap when peft was never imported: then it cannot)."""
    return "peft" in sys.modules and any(True for _ in lora_layers(model))


def lora_layers(model: torch.nn.Module) -> Iterator[Any]:
    """The peft LoRA layers of ``model``, in module order."""
    return (module for module in model.modules() if _is_lora_layer(module))


def _is_lora_layer(module: Any) -> bool:
    if "peft" not in sys.modules:
        return False
    from peft.tuners.lora import LoraLayer

    return isinstance(module, LoraLayer)


def adapter_pairs(model: torch.nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The teacher adapter's tensors and, in the same order, the student adapter's (``lora_A``/``lora_B`` ...)."""
    named = dict(model.named_parameters())
    teachers, students = [], []
    for name, param in named.items():
        parts = name.split(".")
        if _adapter_of(parts) == STUDENT:
            index = len(parts) - 1 - parts[::-1].index(STUDENT)
            teachers.append(named[".".join(parts[:index] + [TEACHER] + parts[index + 1 :])].data)
            students.append(param.data)
    return teachers, students


def _adapter_of(parts: list[str]) -> str | None:
    """The adapter a parameter name belongs to (``...lora_A.student.weight`` -> ``student``), None for the base."""
    for owner, key in zip(parts, parts[1:]):
        if owner.startswith("lora_"):
            return key
    return None


def _freeze_all_but_student(model: torch.nn.Module) -> None:
    for name, param in model.named_parameters():
        param.requires_grad_(_adapter_of(name.split(".")) == STUDENT)


@contextlib.contextmanager
def teacher_adapter(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` as the teacher: the ``teacher`` adapter active, every module in eval mode; restored after.

    peft's ``set_adapter`` also flips ``requires_grad`` (the active adapter becomes trainable), so each parameter's
    flag is restored as it was: the student's adapter stays the only trainable tensors, before and after. The flags
    matter at backward time (a leaf that no longer requires grad gets none), which runs after this context exits.
    """
    flags = [(param, param.requires_grad) for param in model.parameters()]
    modes = [(module, module.training) for module in model.modules()]
    layers = list(lora_layers(model))
    model.eval()  # no adapter dropout and no checkpointing in the target, as for a full-copy teacher
    try:
        for layer in layers:
            layer.set_adapter(TEACHER)
        yield
    finally:
        for layer in layers:
            layer.set_adapter(STUDENT)
        for param, flag in flags:
            param.requires_grad_(flag)
        for module, mode in modes:
            module.training = mode


class AdapterTeacher(torch.nn.Module):
    """The EMA teacher as the ``teacher`` adapter over the student's own base: what the loss and the EMA read.

    It owns no tensors (the adapters live in the student, so checkpoints, dtype casts and device moves handle them
    once) and offers what the module reads from a full-copy teacher: ``base_model`` (the backbone, run with the
    teacher adapter; :func:`caopd_pl.models.loading.final_hidden_states` calls it), ``get_output_embeddings`` (the
    shared, never adapted output layer) and ``ema_pairs`` (the tensors :func:`caopd_pl.ema.ema_update` moves).

    Args:
        student: the model :func:`add_adapters` prepared.
    """

    def __init__(self, student: torch.nn.Module) -> None:
        super().__init__()
        self._student = (student,)  # a tuple: not a submodule, so mode changes and state_dict leave the student be

    @property
    def student(self) -> torch.nn.Module:
        """The model holding the base and both adapters."""
        return self._student[0]

    @property
    def base_model(self) -> Callable[..., Any]:
        """The student's backbone (a callable like a transformers ``base_model``), run with the teacher adapter."""

        def forward(*args: Any, **kwargs: Any) -> Any:
            with teacher_adapter(self.student):
                return self.student.base_model(*args, **kwargs)

        return forward

    def get_output_embeddings(self) -> torch.nn.Module:
        """The output layer, shared with the student (adapters never touch it)."""
        return self.student.get_output_embeddings()

    def ema_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The teacher adapter's tensors and the student adapter's, in matching order."""
        return adapter_pairs(self.student)

    def copy_student(self) -> None:
        """teacher adapter <- student adapter, exactly."""
        with torch.no_grad():
            for teacher, student in zip(*self.ema_pairs()):
                teacher.copy_(student)


def iter_merged_parameters(
    named: Iterator[tuple[str, torch.Tensor]], model: torch.nn.Module
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(base checkpoint name, tensor)`` with the active (student) adapter merged into each adapted weight.

    Args:
        named: ``(name, full tensor)`` of every parameter of ``model`` (as gathered for an engine).
        model: the model the names belong to (its LoRA layers compute the deltas).

    Adapter tensors are left out, and ``...q_proj.base_layer.weight`` comes out as ``...q_proj.weight`` holding
    ``W + (alpha / r) B @ A``, summed in float32 and yielded in float32 when W is half precision: the engine casts
    it once to its own dtype. An fp32 engine (vLLM on CPU) then holds the student exactly; a bf16 engine holds it
    rounded once. Summed in bf16 (peft's merge), the adapter's early change would mostly round away whatever the
    engine's dtype (docs/scaling.md measures it, ``benchmarks/lora_bf16_gap.py``).
    One merged weight at a time: no copy of the model.
    """
    for name, tensor in named:
        parts = name.split(".")
        if _adapter_of(parts) is not None:
            continue
        if "base_layer" not in parts:
            yield name, tensor
            continue
        index = parts.index("base_layer")
        layer = model.get_submodule(".".join(parts[:index]))
        if parts[-1] == "weight":
            with torch.no_grad():
                tensor = tensor.to(torch.promote_types(tensor.dtype, torch.float32))  # summed in fp32 (docstring)
                for adapter in layer.active_adapters:
                    tensor = tensor + layer.get_delta_weight(adapter)
        yield ".".join(parts[:index] + parts[index + 1 :]), tensor


def merge_adapter(model: torch.nn.Module, adapter: str = STUDENT) -> torch.nn.Module:
    """Merge ``adapter`` into the base weights and remove every LoRA layer, in place: a plain transformers model.

    Used by export; the model's other adapter is dropped.
    """
    for name, layer in [(name, module) for name, module in model.named_modules() if _is_lora_layer(module)]:
        layer.merge(adapter_names=[adapter])
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
    return model
