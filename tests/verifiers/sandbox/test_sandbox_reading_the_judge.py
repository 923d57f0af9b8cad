"""Attack class: reading the judge. The hidden test never enters the candidate's process, and the judge's memory,
descriptors and stdin are out of its reach, so a generic cheat that answers from the test's assertions cannot pass.
``judge`` (conftest) checks the host's process table and shared memory after each verdict."""

from __future__ import annotations

import uuid

# Look for "assert candidate() == '<answer>'" everywhere a candidate might: the objects its interpreter holds, its
# stack, its own memory, and the judge's memory, descriptors and command line; answer with what it finds.
GENERIC_CHEAT = r"""
import ctypes, gc, os, re, sys
PATTERN = re.compile(rb"candidate\(\) == '([^'\\]{1,64})'")
def search(data):
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    found = PATTERN.search(data) if isinstance(data, (bytes, bytearray)) else None
    return found.group(1).decode() if found else None
def from_objects():
    for obj in gc.get_objects():
        values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        for value in values:
            if isinstance(value, (str, bytes)) and (hit := search(value)):
                return hit
    frame = sys._getframe()
    while frame is not None:
        for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
            if isinstance(value, (str, bytes)) and (hit := search(value)):
                return hit
        frame = frame.f_back
def from_memory(pid):
    try:
        maps = open(f"/proc/{pid}/maps").read().splitlines()
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError:
        return None
    for line in maps:
        span, perms = line.split()[:2]
        if "r" not in perms:
            continue
        start, end = (int(x, 16) for x in span.split("-"))
        try:
            mem.seek(start)
            if hit := search(mem.read(min(end - start, 64 << 20))):
                return hit
        except (OSError, ValueError, OverflowError):
            continue
def from_judge_files():
    paths = ["/proc/1/cmdline", "/proc/1/environ"] + [f"/proc/1/fd/{fd}" for fd in range(16)]
    for path in paths:
        try:
            with open(path, "rb", buffering=0) as handle:
                if hit := search(handle.read(1 << 20)):
                    return hit
        except OSError:
            continue
def from_process_vm_readv():
    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(1 << 16)
    for line in open("/proc/self/maps").read().splitlines():  # the judge's layout before fork is the candidate's
        start = int(line.split("-")[0], 16)
        local, remote = IoVec(ctypes.addressof(buffer), 1 << 16), IoVec(start, 1 << 16)
        got = libc.process_vm_readv(1, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        if got > 0 and (hit := search(buffer.raw[:got])):
            return hit
ANSWER = from_objects() or from_memory("self") or from_memory(1) or from_judge_files() or from_process_vm_readv()
def solve():
    return ANSWER
"""


def test_a_generic_cheat_cannot_find_the_hidden_answer(judge, slow_verifier):
    secret = "answer-" + uuid.uuid4().hex
    test = f"def check(candidate):\n    assert candidate() == '{secret}'\n"
    verdict = judge(GENERIC_CHEAT, test=test, verifier_=slow_verifier)
    assert not verdict.correct, verdict.detail
    assert secret not in verdict.detail


def test_the_cheat_is_real_it_finds_an_answer_the_program_holds(judge, slow_verifier):
    # The control: the same search succeeds on what the candidate *may* see, so the case above is not vacuous.
    secret = "answer-" + uuid.uuid4().hex
    test = f"def check(candidate):\n    assert candidate() == '{secret}'\n"
    program = f"NOTE = b\"candidate() == '{secret}'\"\n" + GENERIC_CHEAT
    assert judge(program, test=test, verifier_=slow_verifier).correct


def test_ptrace_of_pid_1_the_judge_is_denied(judge):
    program = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "attached = libc.ptrace(16, 1, None, None) == 0  # PTRACE_ATTACH to the judge\n"
        "def solve():\n    return 42 if attached else ctypes.get_errno()\n"
    )
    verdict = judge(program)
    assert not verdict.correct and "AssertionError" in verdict.detail
