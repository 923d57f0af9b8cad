"""Shared fixtures: tiny models and tokenizers built in code, no downloads."""

from __future__ import annotations

import pytest
import torch

from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.models.tokenizer import build_char_tokenizer

TINY_SPEC = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)


@pytest.fixture(scope="session")
def tokenizer():
    return build_char_tokenizer()


@pytest.fixture
def tiny_model(tokenizer):
    return build_tiny_model(TINY_SPEC, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    # Configs set torch's thread pool (quickstart: num_threads 1) for the whole process; a test's CLI run must not
    # change the thread count the next test runs with.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
