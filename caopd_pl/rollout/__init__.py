"""Rollout engines behind one interface, chosen by ``data.rollout.engine``: a name in :data:`ENGINES` (or a class
path), or ``auto``.

``hf`` (Hugging Face ``generate`` on the student) and ``vllm`` (a colocated vLLM engine, imported only when one is
created) are registered here; any other :class:`RolloutEngine` subclass with a ``name`` registers itself when it is
defined. ``auto`` takes vLLM when it is installed and a GPU is present, else ``hf``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from caopd_pl.rollout.base import AUTO, ENGINES, Rollout, RolloutConfig, RolloutEngine, check_engine_name
from caopd_pl.rollout.hf import HFEngine
from caopd_pl.rollout.vllm import VLLMEngine, vllm_available

log = logging.getLogger(__name__)

__all__ = ["ENGINES", "HFEngine", "Rollout", "RolloutConfig", "RolloutEngine", "VLLMEngine", "make_engine"]


def make_engine(config: RolloutConfig, model: torch.nn.Module, tokenizer: Any) -> RolloutEngine:
    """The engine ``config.engine`` names, created for ``model`` (``auto`` resolved first; the choice is logged).

    Raises:
        ValueError: ``config.engine`` is neither a registered engine nor ``auto``.
        ImportError: the engine needs a package that is not installed (vLLM).
    """
    name = resolve_engine_name(config.engine)
    engine = ENGINES.resolve(name)
    log.info("rollout engine: %s (%s)", name, engine.__qualname__)
    return engine(config, model, tokenizer)


def resolve_engine_name(requested: str) -> str:
    """``requested`` itself, or for ``auto`` the engine it picks: ``vllm`` with vLLM and a GPU, else ``hf``."""
    check_engine_name(requested)
    if requested != AUTO:
        return requested
    name = VLLMEngine.name if vllm_available() and torch.cuda.is_available() else HFEngine.name
    why = "vLLM installed and a GPU present" if name == VLLMEngine.name else _auto_hf_reason()
    log.info("data.rollout.engine: auto -> %s (%s)", name, why)
    return name


def _auto_hf_reason() -> str:
    return "no GPU" if vllm_available() else "vLLM not installed"
