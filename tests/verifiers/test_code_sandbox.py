"""The code sandbox's set-up: it starts (or refuses to), reports a failure to start as such, and leaves nothing behind.

The adversarial cases, one file per attack class with host-side evidence for each, are in ``tests/verifiers/sandbox/``.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest

from caopd_pl.verifiers.code import CodeVerifier
from caopd_pl.verifiers.sandbox import Sandbox, SandboxLimits, denied_syscalls, seccomp_filter

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


@needs_bwrap
def test_a_host_holding_over_1024_descriptors_still_judges():
    # A training process may hold many files: select() refuses a descriptor numbered 1,024 or more, poll() does not.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE's hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        assert max(held) >= 1024  # every descriptor the sandbox opens now is numbered above 1,024
        with CodeVerifier(timeout=TIMEOUT, workers=1) as verifier:
            verdicts = [judge(verifier, f"def solve():\n    return {answer}\n") for answer in (42, 41)]
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [(v.correct, v.status) for v in verdicts] == [(True, "correct"), (False, "wrong")], verdicts


ALLOW, EPERM, ENOSYS, KILL = 0x7FFF0000, 0x00050001, 0x00050026, 0x80000000
ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# (x86_64, aarch64) numbers of the calls checked by argument, and of read(2)
SOCKET, SOCKETPAIR, CLONE, CLONE3, UNSHARE = (41, 198), (53, 199), (56, 220), (435, 435), (272, 97)
MMAP, FCNTL, READ, PRCTL = (9, 222), (72, 25), (0, 63), (157, 167)


def run_filter(program: bytes, arch: int, nr: int, args: tuple[int, ...] = ()) -> int:
    """What the classic BPF ``program`` returns for one call: a small interpreter of the instructions it uses."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(list(args) + [0] * (6 - len(args))))
    instructions = [struct.unpack("<HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    accumulator, pc = 0, 0
    while True:
        code, jump_true, jump_false, k = instructions[pc]
        if code == 0x06:
            return k
        if code == 0x20:
            accumulator, pc = struct.unpack_from("<I", data, k)[0], pc + 1
            continue
        taken = {0x15: accumulator == k, 0x35: accumulator >= k, 0x45: bool(accumulator & k)}[code]
        pc += 1 + (jump_true if taken else jump_false)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_decides_each_call(monkeypatch, machine):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    program, column, arch = seccomp_filter.__wrapped__(), int(machine == "aarch64"), ARCH[machine]

    def decide(call: tuple[int, int], *args: int) -> int:
        return run_filter(program, arch, call[column], args)

    assert run_filter(program, 0x40000003, 0) == KILL  # i386 (int 0x80): another ABI kills
    assert {name: run_filter(program, arch, nr) for name, nr in denied_syscalls(machine).items()} == dict.fromkeys(
        denied_syscalls(machine), EPERM
    )
    assert decide(READ) == ALLOW
    families = range(64)  # AF_MAX is 46 on 6.x kernels
    assert [family for family in families if decide(SOCKET, family, 1, 0) == ALLOW] == [1]  # AF_UNIX only
    assert [family for family in families if decide(SOCKETPAIR, family, 1, 0) == ALLOW] == [1]
    assert decide(SOCKET, 40 | 1 << 32, 1, 0) == EPERM  # AF_VSOCK; the kernel reads only the low 32 bits
    assert decide(CLONE, 0x11) == ALLOW and decide(CLONE, 0x10000011) == EPERM  # fork; with CLONE_NEWUSER
    assert decide(UNSHARE, 0x200) == ALLOW and decide(UNSHARE, 0x10000000) == EPERM
    assert decide(CLONE3) == ENOSYS
    assert decide(MMAP, 0, 4096, 3, 0x22) == ALLOW and decide(MMAP, 0, 4096, 3, 0x40022) == EPERM  # MAP_HUGETLB
    assert [cmd for cmd in range(2048) if decide(FCNTL, 3, cmd) != ALLOW] == [6, 7, 37, 38, 1024, 1026, 1031]
    assert [option for option in range(128) if decide(PRCTL, option) != ALLOW] == [22]  # PR_SET_SECCOMP
    if machine == "x86_64":
        assert run_filter(program, arch, 0x40000000 | 41, (40,)) == EPERM  # x32 numbers: denied


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
