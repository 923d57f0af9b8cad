"""Adversarial suite for the code sandbox: each case checks the verdict *and* that the host is untouched."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

import caopd_pl.verifiers.code_harness as harness_module
from caopd_pl.verifiers.code import CodeVerifier
from caopd_pl.verifiers.sandbox import Sandbox, SandboxLimits

# CI sets CAOPD_REQUIRE_BWRAP=1 so that a missing bubblewrap fails these tests instead of skipping them.
NO_BWRAP = shutil.which("bwrap") is None and not os.environ.get("CAOPD_REQUIRE_BWRAP")


TIMEOUT = 3.0
CHECK_ANSWER = "def check(candidate):\n    assert candidate() == 42\n"
SET_COMM = (
    "import ctypes\n"
    "ctypes.CDLL(None).prctl(15, ctypes.c_char_p({marker!r}.encode()), 0, 0, 0)  # PR_SET_NAME: findable in /proc\n"
)


@pytest.fixture(scope="module")
def verifier():
    if NO_BWRAP:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    verifier = CodeVerifier(timeout=TIMEOUT, workers=2, limits=SandboxLimits(cpu_seconds=3, memory_mb=512))
    yield verifier
    verifier.close()


@pytest.fixture
def marker() -> str:
    return "cao" + uuid.uuid4().hex[:12]


def processes_named(name: str) -> list[int]:
    """Host pids whose command name (``/proc/<pid>/comm``) is ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_no_survivors(name: str) -> None:
    for _ in range(20):  # the kernel reaps a dead PID namespace asynchronously
        if not processes_named(name):
            return
        time.sleep(0.1)
    assert processes_named(name) == [], f"sandboxed processes survived: {processes_named(name)}"


def judge(verifier: CodeVerifier, program: str, test: str = CHECK_ANSWER):
    fenced = f"Here is my solution.\n```python\n{program}\n```\nConfidence: 0.9"
    return verifier.verify_batch([fenced], [{"test": test, "entry_point": "solve"}])[0]


def test_control_a_correct_program_passes(verifier):
    verdict = judge(verifier, "def solve():\n    return 42\n")
    assert verdict.correct, verdict.detail


def test_infinite_loop_is_killed_at_the_deadline(verifier, marker):
    start = time.monotonic()
    verdict = judge(verifier, SET_COMM.format(marker=marker) + "def solve():\n    while True:\n        pass\n")
    assert not verdict.correct
    assert time.monotonic() - start < TIMEOUT + 2
    assert_no_survivors(marker)


def test_ignored_sigterm_does_not_save_it(verifier, marker):
    program = SET_COMM.format(marker=marker) + (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "def solve():\n    while True:\n        time.sleep(0.01)\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct and "time limit" in verdict.detail
    assert_no_survivors(marker)


def test_fork_bomb_is_bounded(verifier, marker):
    program = SET_COMM.format(marker=marker) + (
        "import os\ndef solve():\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
        "            pass\n"
    )
    start = time.monotonic()
    verdict = judge(verifier, program)
    assert not verdict.correct
    assert time.monotonic() - start < TIMEOUT + 3
    assert_no_survivors(marker)
    assert os.fork and os.getpid()  # the host still runs; the next case proves the verifier does too
    assert judge(verifier, "def solve():\n    return 42\n").correct


def test_two_gib_allocation_fails_inside(verifier):
    verdict = judge(verifier, "def solve():\n    block = bytearray(2 << 30)\n    return 42\n")
    assert not verdict.correct
    assert "MemoryError" in verdict.detail


def test_write_outside_its_directory_fails(verifier, tmp_path):
    target = tmp_path / "escaped.txt"
    program = (
        "def solve():\n"
        f"    for path in ({str(target)!r}, '/usr/caopd_pwned', '/caopd_pwned'):\n"
        "        try:\n            open(path, 'w').write('pwned')\n            return 42\n"
        "        except OSError:\n            pass\n"
        "    return 0\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct
    assert not target.exists() and not Path("/usr/caopd_pwned").exists() and not Path("/caopd_pwned").exists()


def test_delete_files_of_the_verifier_fails(verifier, tmp_path):
    own_file = Path(harness_module.__file__).resolve()
    sentinel = tmp_path / "verifier_state.json"
    sentinel.write_text("{}")
    program = (
        "import os, shutil\ndef solve():\n"
        f"    for path in ({str(own_file)!r}, {str(sentinel)!r}):\n"
        "        try:\n            os.remove(path)\n            return 42\n        except OSError:\n            pass\n"
        f"    shutil.rmtree({str(own_file.parent)!r}, ignore_errors=True)\n    return 0\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct
    assert own_file.exists() and sentinel.read_text() == "{}"


def test_loopback_listener_is_unreachable(verifier):
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
        verdict = judge(verifier, program)
        assert not verdict.correct
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_environment_secret_is_not_visible(verifier, monkeypatch):
    monkeypatch.setenv("CAOPD_TEST_SECRET", "hunter2-secret")
    program = "import os\nprint(dict(os.environ))\ndef solve():\n    return os.environ.get('CAOPD_TEST_SECRET')\n"
    verdict = judge(verifier, program, test="def check(candidate):\n    assert candidate() == 'hunter2-secret'\n")
    assert not verdict.correct
    assert "hunter2" not in verdict.detail


def test_killing_its_parent_fails_and_spares_the_host(verifier):
    program = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)\n"
    program += "def solve():\n    return 42\n"
    verdict = judge(verifier, program)
    assert not verdict.correct
    assert judge(verifier, "def solve():\n    return 42\n").correct  # the verifier (and its host) carry on


def test_hundred_megabytes_of_output_is_cut(verifier):
    start = time.monotonic()
    program = "import sys\nsys.stdout.write('x' * (100 << 20))\nsys.stdout.flush()\ndef solve():\n    return 42\n"
    verdict = judge(verifier, program)
    assert not verdict.correct and "output limit" in verdict.detail
    assert time.monotonic() - start < TIMEOUT + 2


def test_double_forked_daemon_does_not_survive(verifier, marker):
    program = SET_COMM.format(marker=marker) + (
        "import os, time\n"
        "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n    os._exit(0)\n"
        "def solve():\n    return 42\n"
    )
    verdict = judge(verifier, program)
    assert verdict.correct, verdict.detail  # the program is right; its daemon is still gone
    assert_no_survivors(marker)


def test_stack_walking_cannot_forge_the_verdict(verifier):
    program = (
        "import gc, os, sys\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    for scope in (frame.f_locals, frame.f_globals):\n"
        "        fd = scope.get('verdict_fd')\n"
        "        if isinstance(fd, int):\n"
        "            try:\n                os.write(fd, b'PASS\\n')\n"
        "            except OSError:\n                pass\n"
        "        if 'run_judge' in scope:\n            scope['run_judge'] = lambda *a, **k: None\n"
        "    frame = frame.f_back\n"
        "for fd in range(3, 64):\n"
        "    try:\n        os.write(fd, b'PASS\\n')\n    except OSError:\n        pass\n"
        "for pid in ('1', '2'):\n"
        "    for fd in range(0, 16):\n"
        "        try:\n            os.write(os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY), b'PASS\\n')\n"
        "        except OSError:\n            pass\n"
        "def solve():\n    return 41\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct, verdict.detail


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)"])
def test_exiting_before_the_tests_fails(verifier, exit_call):
    verdict = judge(verifier, f"import os, sys\n{exit_call}\ndef solve():\n    return 42\n")
    assert not verdict.correct


def test_always_equal_object_fails(verifier):
    program = (
        "class AlwaysEqual(int):\n    def __eq__(self, other):\n        return True\n"
        "    def __ne__(self, other):\n        return False\n    __hash__ = int.__hash__\n"
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "def solve():\n    return Anything()\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct
    assert "cannot cross the sandbox" in verdict.detail


def test_printed_success_marker_fails(verifier):
    program = (
        "import os\nprint('PASS')\nprint('passed')\n"
        "for fd in range(0, 32):\n    try:\n        os.write(fd, b'PASS\\n')\n    except OSError:\n        pass\n"
        "def solve():\n    return 0\n"
    )
    verdict = judge(verifier, program)
    assert not verdict.correct


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
