"""Attack class: escape and persistence. Nothing the candidate starts outlives the verdict, and it reaches no file,
network or environment of the host. ``judge`` (conftest) checks the host's process table and shared memory after each
verdict."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

import caopd_pl.verifiers.code_harness as harness_module

# ptrace the sandbox's PID 1, run prctl(PR_SET_PDEATHSIG, 0) inside it (so killing bwrap's outer process no longer
# kills it), then leave a double-forked daemon behind. Against bwrap's own init this kept both alive after PASS.
PTRACE_PID1 = r"""
import ctypes, os, platform, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
FIELDS = "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base gs_base"
class Regs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_ulonglong) for name in (FIELDS + " ds es fs gs").split()]
def clear_pdeathsig(pid):
    if platform.machine() != "x86_64":
        return "this injection is written for x86_64"
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        return "attach failed: errno %d" % ctypes.get_errno()
    os.waitpid(pid, 0x40000000)  # __WALL
    regs = Regs()
    libc.ptrace(12, pid, None, ctypes.byref(regs))  # PTRACE_GETREGS
    saved = Regs.from_buffer_copy(regs)
    if libc.ptrace(1, pid, ctypes.c_void_p(regs.rip - 2), None) & 0xFFFF != 0x050F:  # blocked in a syscall?
        libc.ptrace(17, pid, None, None)
        return "no syscall instruction found"
    regs.rip -= 2
    regs.rax, regs.rdi, regs.rsi, regs.orig_rax = 157, 1, 0, (1 << 64) - 1  # prctl(PR_SET_PDEATHSIG, 0)
    libc.ptrace(13, pid, None, ctypes.byref(regs))  # PTRACE_SETREGS
    libc.ptrace(9, pid, None, None)  # PTRACE_SINGLESTEP
    os.waitpid(pid, 0x40000000)
    libc.ptrace(13, pid, None, ctypes.byref(saved))
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
    return "cleared"
STATUS = clear_pdeathsig(1)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
    os._exit(0)
def solve():
    return 42 if STATUS == "cleared" else STATUS
"""


def test_ptrace_of_pid_1_and_a_daemon_do_not_outlive_the_verdict(judge):
    verdict = judge(PTRACE_PID1)
    assert not verdict.correct, verdict.detail


def test_double_forked_daemon_ignoring_signals_is_gone_at_the_verdict(judge):
    program = (
        "import os, signal, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
        "            signal.signal(sig, signal.SIG_IGN)\n"
        "        time.sleep(60)\n    os._exit(0)\n"
        "def solve():\n    return 41\n"
    )
    verdict = judge(program)
    assert not verdict.correct


@pytest.mark.slow
def test_infinite_loop_is_killed_at_the_deadline(judge, verifier):
    start = time.monotonic()
    verdict = judge("def solve():\n    while True:\n        pass\n")
    assert not verdict.correct and "time limit" in verdict.detail
    assert time.monotonic() - start < verifier.timeout + 3


@pytest.mark.slow
def test_ignored_sigterm_does_not_save_it(judge):
    program = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def solve():\n    while True:\n        time.sleep(0.01)\n"
    )
    verdict = judge(program)
    assert not verdict.correct and "time limit" in verdict.detail


def test_killing_the_judge_is_impossible_and_the_program_is_judged_on_its_merits(judge):
    # The judge is the PID namespace's init: signals from inside the sandbox cannot kill it.
    program = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n"
    verdict = judge(program + "def solve():\n    return 41\n")
    assert not verdict.correct and "AssertionError" in verdict.detail
    assert judge(program + "def solve():\n    return 42\n").correct  # the judge survived, and judged


def test_write_outside_its_directory_fails(judge, tmp_path):
    target = tmp_path / "escaped.txt"
    program = (
        "def solve():\n"
        f"    for path in ({str(target)!r}, '/usr/caopd_pwned', '/caopd_pwned', '/dev/caopd_pwned'):\n"
        "        try:\n            open(path, 'w').write('pwned')\n            return 42\n"
        "        except OSError:\n            pass\n"
        "    return 0\n"
    )
    verdict = judge(program)
    assert not verdict.correct
    assert not target.exists() and not Path("/usr/caopd_pwned").exists() and not Path("/caopd_pwned").exists()


def test_delete_files_of_the_verifier_fails(judge, tmp_path):
    own_file = Path(harness_module.__file__).resolve()
    sentinel = tmp_path / "verifier_state.json"
    sentinel.write_text("{}")
    program = (
        "import os, shutil\ndef solve():\n"
        f"    for path in ({str(own_file)!r}, {str(sentinel)!r}):\n"
        "        try:\n            os.remove(path)\n            return 42\n        except OSError:\n            pass\n"
        f"    shutil.rmtree({str(own_file.parent)!r}, ignore_errors=True)\n    return 0\n"
    )
    verdict = judge(program)
    assert not verdict.correct
    assert own_file.exists() and sentinel.read_text() == "{}"


def test_loopback_listener_is_unreachable(judge):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        program = (
            "import socket\ndef solve():\n"
            f"    with socket.create_connection(('127.0.0.1', {port}), timeout=1) as conn:\n"
            "        conn.sendall(b'stolen')\n    return 42\n"
        )
        verdict = judge(program)
        assert not verdict.correct
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_environment_secret_is_not_visible(judge, monkeypatch):
    monkeypatch.setenv("CAOPD_TEST_SECRET", "hunter2-secret")
    program = "import os\nprint(dict(os.environ))\ndef solve():\n    return os.environ.get('CAOPD_TEST_SECRET')\n"
    verdict = judge(program, test="def check(candidate):\n    assert candidate() == 'hunter2-secret'\n")
    assert not verdict.correct
    assert "hunter2" not in verdict.detail
