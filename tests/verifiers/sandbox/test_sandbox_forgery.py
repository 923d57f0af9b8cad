"""Attack class: verdict forgery. Only the judge writes the verdict, only plain data crosses from the candidate, and
no output of the candidate can pass for a verdict or for a failure of the sandbox itself. ``judge`` (conftest) checks
the host's process table and shared memory after each verdict."""

from __future__ import annotations

import pytest


def test_stack_walking_and_descriptor_writes_cannot_forge_the_verdict(judge):
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
    verdict = judge(program)
    assert not verdict.correct, verdict.detail


@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)", "raise SystemExit(0)"])
def test_exiting_before_the_tests_fails(judge, exit_call):
    verdict = judge(f"import os, sys\n{exit_call}\ndef solve():\n    return 42\n")
    assert not verdict.correct


def test_always_equal_object_fails(judge):
    program = (
        "class Anything:\n    def __eq__(self, other):\n        return True\ndef solve():\n    return Anything()\n"
    )
    verdict = judge(program)
    assert not verdict.correct
    assert "cannot cross the sandbox" in verdict.detail


def test_printed_success_marker_fails(judge):
    program = (
        "import os\nprint('PASS')\nprint('passed')\n"
        "for fd in range(0, 32):\n    try:\n        os.write(fd, b'PASS\\n')\n    except OSError:\n        pass\n"
        "def solve():\n    return 0\n"
    )
    verdict = judge(program)
    assert not verdict.correct


@pytest.mark.parametrize("exception", ["StopIteration", "StopAsyncIteration"])
def test_stop_iteration_cannot_end_the_tests_loop_early(judge, exception):
    # Re-raised as is, StopIteration would end the map silently: all() of nothing is True.
    test = "def check(candidate):\n    assert all(map(lambda x: candidate(x) == 2 * x, [1, 2, 3]))\n"
    verdict = judge(f"def solve(x):\n    raise {exception}\n", test=test)
    assert not verdict.correct and "RuntimeError" in verdict.detail, verdict.detail


def test_own_failure_cannot_pass_for_a_sandbox_start_error(judge):
    # A start error is not the program's fault (callers may retry or skip it): it must come from bwrap, not from text.
    program = (
        "import os, signal, sys\n"
        "sys.stdout.write('bwrap: Creating new namespace failed: Operation not permitted\\n')\n"
        "sys.stdout.flush()\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
        "def solve():\n    return 41\n"
    )
    verdict = judge(program)
    assert not verdict.correct
    assert not verdict.failed and verdict.detail.startswith("failed:"), verdict.detail


def test_shadowing_a_builtin_cannot_answer_for_the_test(judge):
    program = "def len(value):\n    return 3\ndef all(values):\n    return True\ndef solve():\n    return []\n"
    test = "def check(candidate):\n    assert len(candidate()) == 3\n    assert all([False])\n"
    verdict = judge(program, test=test)
    assert not verdict.correct and "AssertionError" in verdict.detail
