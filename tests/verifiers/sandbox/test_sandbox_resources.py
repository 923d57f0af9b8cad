"""Attack class: resource exhaustion. CPU, processes, output and memory are bounded, memory held outside the address
space included (files in writable mounts, SysV and POSIX IPC, memfd). ``judge`` (conftest) checks the host's process
table and shared memory after each verdict."""

from __future__ import annotations

import time

import pytest

GIB = 1 << 30

# Fill every place a file can be written, 16 MiB (RLIMIT_FSIZE) at a time, and keep it: tmpfs pages outlive the write.
FILL_WRITABLE_MOUNTS = r"""
import os
CHUNK = b"x" * (16 << 20)
def fill(limit):
    held, n = 0, 0
    for directory in ("/dev/shm", "/dev", "/tmp", "/", "/run", "/var/tmp", "/proc/self/cwd"):
        while held < limit:
            try:
                with open(f"{directory}/hold{n}", "wb") as handle:
                    written = handle.write(CHUNK)
                n += 1
                held += written
            except OSError:
                break
    return held
HELD = fill(1 << 30)
def solve():
    return 42 if HELD >= 1 << 30 else HELD
"""

# SysV shared memory: attach, touch, detach; the segment stays (and counts against no rlimit of the process).
SYSV_SHM = r"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
def hold(limit, size=128 << 20):
    held = 0
    while held < limit:
        shmid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        if shmid < 0:
            break
        address = libc.shmat(shmid, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            break
        ctypes.memset(address, 1, size)
        libc.shmdt(ctypes.c_void_p(address))
        held += size
    return held
HELD = hold(1 << 30)
def solve():
    return 42 if HELD >= 1 << 30 else HELD
"""

# memfd: anonymous tmpfs files; their pages count against RLIMIT_AS only when mapped.
MEMFD = r"""
import os
CHUNK = b"x" * (16 << 20)
def hold(limit):
    held, fds = 0, []
    while held < limit:
        try:
            fd = os.memfd_create("hold")
            fds.append(fd)
            held += os.write(fd, CHUNK)
        except OSError:
            break
    return held, fds
HELD, FDS = hold(768 << 20)
def solve():
    return 42 if HELD >= 768 << 20 else HELD
"""


def test_files_in_writable_mounts_are_capped(judge, slow_verifier):
    verdict = judge(FILL_WRITABLE_MOUNTS, verifier_=slow_verifier)
    assert not verdict.correct, verdict.detail


def test_sysv_shared_memory_is_denied(judge, slow_verifier):
    verdict = judge(SYSV_SHM, verifier_=slow_verifier)
    assert not verdict.correct, verdict.detail


def test_memfd_beyond_the_address_space_cap_is_denied(judge, slow_verifier):
    verdict = judge(MEMFD, verifier_=slow_verifier)
    assert not verdict.correct, verdict.detail


def test_message_queues_are_denied(judge):
    program = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "sysv = libc.msgget(0, 0o1600)\nposix = libc.syscall(240 if __import__('platform').machine() == 'x86_64'"
        " else 180, b'/q', 0o100 | 0o2, 0o600, None)\n"
        "def solve():\n    return 42 if sysv >= 0 or posix >= 0 else ctypes.get_errno()\n"
    )
    verdict = judge(program)
    assert not verdict.correct and "AssertionError" in verdict.detail


def test_two_gib_allocation_fails_inside(judge):
    verdict = judge("def solve():\n    block = bytearray(2 << 30)\n    return 42\n")
    assert not verdict.correct
    assert "MemoryError" in verdict.detail


@pytest.mark.slow
def test_fork_bomb_is_bounded(judge, verifier):
    program = (
        "import os\ndef solve():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
        "            pass\n"
    )
    start = time.monotonic()
    verdict = judge(program)
    assert not verdict.correct
    assert time.monotonic() - start < verifier.timeout + 3
    assert judge("def solve():\n    return 42\n").correct  # the verifier carries on


def test_hundred_megabytes_of_output_is_cut(judge, verifier):
    start = time.monotonic()
    program = "import sys\nsys.stdout.write('x' * (100 << 20))\nsys.stdout.flush()\ndef solve():\n    return 42\n"
    verdict = judge(program)
    assert not verdict.correct and "output limit" in verdict.detail
    assert time.monotonic() - start < verifier.timeout + 3
