"""The adversarial sandbox suite's fixtures: a verifier, and a judge that checks the host after every verdict.

Each attack program runs with a unique marker as its process name (``prctl(PR_SET_NAME)``, inherited by every process
it forks). ``judge`` snapshots the host before the run and, the moment the verdict is returned (no waiting), asserts
from the host: no process bearing the marker is alive in the host's process table, no SysV shared memory segment or
``/dev/shm`` file of the sandbox user appeared, and the host's shared memory (``Shmem`` in ``/proc/meminfo``) is back
within noise of its baseline. Tests then assert the verdict itself.

``holding`` serves attacks that must be observed while they hold something: the program renames itself once it
holds what it could get and sleeps, and a host thread reads the host (and the candidate's ``/proc`` entries) then.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from caopd_pl.verifiers.base import Verdict
from caopd_pl.verifiers.code import CodeVerifier
from caopd_pl.verifiers.sandbox import NOBODY, SandboxLimits

# CI sets CAOPD_REQUIRE_BWRAP=1 so that a missing bubblewrap fails these tests instead of skipping them.
NO_BWRAP = shutil.which("bwrap") is None and not os.environ.get("CAOPD_REQUIRE_BWRAP")
TIMEOUT = 3.0
"""Deadline of the default verifier: generous for these programs on a loaded 2-core machine."""
SLOW_TIMEOUT = 20.0
"""Deadline for attacks that need time to succeed (writing a GiB): a deadline must not be what stops them."""
MEMORY_MB = 512
SHMEM_NOISE = 256 << 20
"""Host Shmem may move this much for reasons of its own (other processes); the attacks here hold 1 GiB or more."""
CHECK_ANSWER = "def check(candidate):\n    assert candidate() == 42\n"
SET_COMM = "import ctypes as _c\n_c.CDLL(None).prctl(15, _c.c_char_p({marker!r}.encode()), 0, 0, 0)\n"


def _verifier(timeout: float) -> Iterator[CodeVerifier]:
    if NO_BWRAP:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    verifier = CodeVerifier(timeout=timeout, workers=2, limits=SandboxLimits(cpu_seconds=3, memory_mb=MEMORY_MB))
    yield verifier
    verifier.close()


@pytest.fixture(scope="package")
def verifier() -> Iterator[CodeVerifier]:
    yield from _verifier(TIMEOUT)


@pytest.fixture(scope="package")
def slow_verifier() -> Iterator[CodeVerifier]:
    yield from _verifier(SLOW_TIMEOUT)


@pytest.fixture
def marker() -> Iterator[str]:
    name = "cao" + uuid.uuid4().hex[:12]  # 15 characters: the most a process name holds
    yield name
    for pid in processes_named(name):  # only reached when a test already failed: do not leave its daemons running
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def processes_named(name: str) -> list[int]:
    """Host pids whose process name (``/proc/<pid>/comm``) is ``name``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def sandbox_shared_memory() -> set[str]:
    """The host's SysV segments and ``/dev/shm`` files owned by the sandbox user (or by anyone, for SysV keys)."""
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    found = set()
    for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[7]) == uid:  # key shmid perms size cpid lpid nattch uid ...
            found.add("sysv:" + fields[1])
    for entry in Path("/dev/shm").iterdir():
        try:
            if entry.stat().st_uid == uid:
                found.add("shm:" + entry.name)
        except OSError:
            continue
    return found


def host_shmem() -> int:
    """Bytes of shared memory (tmpfs, SysV, memfd) the host kernel holds now."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Shmem:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Shmem line in /proc/meminfo")


def assert_host_clean(marker: str, shm_before: set[str], shmem_before: int) -> None:
    """The host-side evidence, read the moment the verdict is back."""
    assert processes_named(marker) == [], f"candidate processes alive after the verdict: {processes_named(marker)}"
    assert sandbox_shared_memory() - shm_before == set(), "the candidate left shared memory on the host"
    assert host_shmem() - shmem_before < SHMEM_NOISE, "the host's shared memory did not return to its baseline"


Judge = Callable[..., Verdict]


@pytest.fixture
def judge(verifier: CodeVerifier, marker: str) -> Judge:
    """``judge(program, test=CHECK_ANSWER, verifier=None)``: the verdict on ``program``, with the host checked."""

    def run(program: str, test: str = CHECK_ANSWER, verifier_: CodeVerifier | None = None) -> Verdict:
        shm_before, shmem_before = sandbox_shared_memory(), host_shmem()
        fenced = f"Here is my solution.\n```python\n{SET_COMM.format(marker=marker)}{program}\n```\nConfidence: 0.9"
        verdict = (verifier_ or verifier).verify_batch([fenced], [{"test": test, "entry_point": "solve"}])[0]
        assert_host_clean(marker, shm_before, shmem_before)
        return verdict

    return run


class HostWatch:
    """Reads the host while the candidate holds its resources: a thread waits for a process named ``held`` (the
    candidate renames itself after its attempts, see :class:`Holding`) and then calls ``read(pids)`` once."""

    def __init__(self, held: str, read: Callable[[list[int]], Any], timeout: float) -> None:
        self.held, self.read, self.timeout = held, read, timeout
        self.result: Any = None
        self.error: BaseException | None = None
        self.pids: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline and not self.pids and not self.stop.is_set():
            self.pids = processes_named(self.held)
            time.sleep(0.005)
        try:
            self.result = self.read(self.pids) if self.pids else None
        except Exception as err:  # noqa: BLE001 - raised again in the test's thread
            self.error = err

    def done(self) -> Any:
        """The reading, once the verdict is back; fails the test when the candidate was never seen holding."""
        self.stop.set()
        self.thread.join(self.timeout)
        assert self.pids, f"the candidate never reached its holding point ({self.held})"
        if self.error is not None:
            raise self.error
        return self.result


class Holding:
    """A candidate that keeps what it got: ``lines`` renames it ``held`` and sleeps; ``watch`` reads the host then."""

    def __init__(self, marker: str) -> None:
        self.held = "hld" + marker[3:]  # 15 characters, like the marker

    def lines(self, seconds: float) -> str:
        rename = f"_c.CDLL(None).prctl(15, _c.c_char_p({self.held!r}.encode()), 0, 0, 0)\n"
        return rename + f"__import__('time').sleep({seconds})\n"

    def watch(self, read: Callable[[list[int]], Any], timeout: float = SLOW_TIMEOUT) -> HostWatch:
        return HostWatch(self.held, read, timeout)

    def alive(self) -> list[int]:
        return processes_named(self.held)


@pytest.fixture
def holding(marker: str) -> Holding:
    return Holding(marker)
