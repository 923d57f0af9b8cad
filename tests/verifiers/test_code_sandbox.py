"""The code sandbox's set-up: it starts (or refuses to), reports a failure to start as such, and leaves nothing behind.

The adversarial cases, one file per attack class with host-side evidence for each, are in ``tests/verifiers/sandbox/``.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest

from caopd_pl.verifiers.code import CodeVerifier
from caopd_pl.verifiers.sandbox import Sandbox, SandboxLimits, seccomp_filter

# CI sets CAOPD_REQUIRE_BWRAP=1 so that a missing bubblewrap fails these tests instead of skipping them.
NO_BWRAP = shutil.which("bwrap") is None and not os.environ.get("CAOPD_REQUIRE_BWRAP")
needs_bwrap = pytest.mark.skipif(NO_BWRAP, reason="bubblewrap is not installed")

TIMEOUT = 3.0
CHECK_ANSWER = {"test": "def check(candidate):\n    assert candidate() == 42\n", "entry_point": "solve"}


def judge(verifier: CodeVerifier, program: str):
    return verifier.verify(f"```python\n{program}\n```\nConfidence: 0.9", CHECK_ANSWER)


@needs_bwrap
def test_control_a_correct_program_passes_and_a_wrong_one_fails():
    verifier = CodeVerifier(timeout=TIMEOUT, workers=1)
    assert judge(verifier, "def solve():\n    return 42\n").correct
    assert not judge(verifier, "def solve():\n    return 41\n").correct


@needs_bwrap
def test_a_bwrap_that_fails_to_start_is_an_error_not_a_failed_program():
    sandbox = Sandbox(limits=SandboxLimits())
    with tempfile.TemporaryDirectory() as directory:  # world-readable: the sandbox may run as nobody
        fake = Path(directory) / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
        fake.chmod(0o755)
        Path(directory).chmod(0o755)
        sandbox.bwrap = str(fake)  # what a kernel that forbids user namespaces does after the probe
        start = time.monotonic()
        run = sandbox.run({"program": "x = 1\n", "test": "", "entry_point": None}, timeout=TIMEOUT)
    assert not run.started and run.verdict is None and "No permissions" in run.output
    assert time.monotonic() - start < TIMEOUT


def test_seccomp_filter_checks_the_architecture_first():
    program = seccomp_filter()
    instructions = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (0x20, 0, 0, 4)  # load seccomp_data.arch
    assert instructions[2] == (0x06, 0, 0, 0x80000000)  # another ABI: kill
    assert instructions[-2:] == [(0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, 0x00050001)]  # allow, else EPERM
    for index, (code, jump_true, _, _) in enumerate(instructions[4:-2], start=4):
        assert code in (0x15, 0x35) and index + 1 + jump_true == len(instructions) - 1  # every match -> EPERM


def test_missing_bubblewrap_refuses_with_a_clear_error():
    with pytest.raises(RuntimeError, match="apt-get install bubblewrap"):
        Sandbox(bwrap="bwrap-that-does-not-exist")


def test_unsafe_mode_warns_and_still_judges():
    with pytest.warns(RuntimeWarning, match="WITHOUT namespaces"):
        verifier = CodeVerifier(sandbox="unsafe", timeout=TIMEOUT, workers=1)
    try:
        assert judge(verifier, "def solve():\n    return 42\n").correct
        assert not judge(verifier, "def solve():\n    return 41\n").correct
    finally:
        verifier.close()
