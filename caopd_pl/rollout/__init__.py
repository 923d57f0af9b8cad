"""Rollout engines: Hugging Face ``generate`` (``hf``) and vLLM (``vllm``), chosen by ``rollout.engine``."""

from __future__ import annotations

import logging

from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine
from caopd_pl.rollout.hf import HFEngine

log = logging.getLogger(__name__)

__all__ = ["HFEngine", "Rollout", "RolloutConfig", "RolloutEngine", "make_engine"]


def make_engine(config: RolloutConfig, model, tokenizer) -> RolloutEngine:
    """The engine ``config.engine`` names (``auto``: vLLM when installed and a GPU is present, else ``hf``)."""
    name = config.engine
    if name != "hf":
        from caopd_pl.rollout.vllm import VLLMEngine, resolve_engine_name

        name = resolve_engine_name(name)
        if name == "vllm":
            return VLLMEngine(model, tokenizer, config)
    log.info("rollout engine: Hugging Face generate")
    return HFEngine(model, tokenizer)
