"""Loading the student: the built-in tiny model, a Hugging Face hub name, or a local directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from caopd_pl.models.source import check_model_source
from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.models.tokenizer import build_char_tokenizer

TINY = "tiny"
Dtype = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelConfig:
    """Which causal LM is the student (the teacher starts as its copy)."""

    name_or_path: str = TINY
    """``tiny`` (built in code, no download), a hub name such as ``Qwen/Qwen3-0.6B``, or a local directory."""
    dtype: Dtype = "float32"
    """Weight dtype of a loaded model (the tiny model is always float32)."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the built-in model."""
    trust_remote_code: bool = False
    """Allow model code shipped with a checkpoint."""
    attn_implementation: str | None = None
    """transformers attention backend (``sdpa``, ``eager``, ``flash_attention_2``); None picks the default."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass to save memory (non-reentrant; active
    while the student is in train mode, which the module keeps it in during training steps)."""
    chat_template: str | None = None
    """A chat template for a tokenizer without one (a base model), or to replace its own: a built-in name
    (``chatml``: ``<|im_start|>role ... <|im_end|>`` turns; ``plain``: ``User: ...`` / ``Assistant: ...`` turns, each
    ending with the tokenizer's EOS), a path to a Jinja file, or the template text itself. None keeps the
    tokenizer's. The model learns to answer in it (the warm start); saved checkpoints and exports carry it."""


def load_model(config: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The student and its tokenizer.

    Raises:
        ValueError: if the tokenizer has no chat template, or the model's logits are not a plain linear read-out
            of the final hidden state (the chunked loss relies on it).
    """
    if config.name_or_path == TINY:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(config.tiny, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    else:
        check_model_source(config.name_or_path)  # one line, before any hub lookup
        tokenizer = load_tokenizer(config.name_or_path, config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            config.name_or_path,
            dtype=DTYPES[config.dtype],
            trust_remote_code=config.trust_remote_code,
            attn_implementation=config.attn_implementation,
        )
    if config.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(config.chat_template)
    _check_tokenizer(tokenizer, config.name_or_path)
    _check_readout(model, config.name_or_path)
    if config.gradient_checkpointing:
        # Non-reentrant, as torch and transformers recommend: it needs no input that requires grad, and works with
        # the keyword arguments (attention mask, position ids) that decoder layers take.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer, exactly as its ``tokenizer.json`` defines it.

    A local checkpoint whose tokenizer is a plain ``tokenizers`` file (``tokenizer_class`` ``TokenizersBackend`` or
    ``PreTrainedTokenizerFast``, as the built-in character tokenizer saves) is loaded as such: ``AutoTokenizer``
    would pick the class of the model type instead (``Qwen2Tokenizer`` beside a Qwen2 config), which replaces the
    file's pre-tokenizer with its own and silently changes every token id.
    """
    config_file = Path(name_or_path) / "tokenizer_config.json"
    if config_file.is_file():
        declared = json.loads(config_file.read_text()).get("tokenizer_class")
        if declared in ("TokenizersBackend", "PreTrainedTokenizerFast"):
            return PreTrainedTokenizerFast.from_pretrained(name_or_path)
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "plain": (
        "{% for message in messages %}"
        "{{ message['role'] | capitalize + ': ' + message['content'] }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
    ),
}
"""The built-in chat templates ``model.model.chat_template`` names, for base models that have none."""


def resolve_chat_template(value: str) -> str:
    """The template text ``model.model.chat_template`` means: a built-in's, a Jinja file's, or the value itself.

    Raises:
        ValueError: a value that is none of these (not a built-in name, no such file, and no Jinja in it).
    """
    if value in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[value]
    path = Path(value).expanduser()
    if path.suffix in (".jinja", ".j2", ".txt") or path.is_file():
        if not path.is_file():
            raise ValueError(f"model.model.chat_template={value!r}: no such file")
        return path.read_text()
    if "{{" in value or "{%" in value:
        return value
    raise ValueError(
        f"model.model.chat_template={value!r} is neither a built-in ({', '.join(CHAT_TEMPLATES)}), a Jinja file, "
        "nor a template"
    )


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, name: str) -> None:
    if not tokenizer.chat_template:
        raise ValueError(
            f"model.name_or_path={name!r}: the tokenizer has no chat template; use an instruct/chat model, or give "
            f"one with model.model.chat_template (a Jinja file, or a built-in: {', '.join(CHAT_TEMPLATES)})"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"model.name_or_path={name!r}: the tokenizer defines no eos_token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def _check_readout(model: PreTrainedModel, name: str) -> None:
    for attribute in ("final_logit_softcapping", "logit_scale", "output_multiplier_scale"):
        if getattr(model.config, attribute, None) not in (None, 1, 1.0):
            raise ValueError(
                f"model.name_or_path={name!r} sets config.{attribute}; the chunked distillation loss assumes logits "
                "= hidden @ lm_head.weight.T and does not support it yet"
            )
    if getattr(model.get_output_embeddings(), "bias", None) is not None:
        raise ValueError(f"model.name_or_path={name!r}: an lm_head with a bias is not supported by the chunked loss")


def final_hidden_states(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) hidden states after the final norm: what ``lm_head`` reads."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
