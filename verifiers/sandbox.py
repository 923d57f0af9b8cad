"""A bubblewrap sandbox for generated Python, with the verdict decided outside it.

Each run starts ``bwrap`` with new user, PID, network, IPC, UTS and cgroup namespaces, a cleared environment, a
read-only ``/usr`` (plus the interpreter's prefix), a private size-capped ``/tmp``, no ``/etc``, ``/home`` or
repository, and ``--die-with-parent``. Inside, :mod:`caopd_pl.verifiers.code_harness` sets hard resource limits (CPU
time, address space, file size, processes, open files) and runs the untrusted program in a separate process from the
test. The host reads the verdict only from a pipe that the untrusted process never holds; stdout is captured for the
verdict's detail and capped. On timeout or too much output the whole process group is killed with SIGKILL; the PID
namespace then takes every descendant (daemons included) with it.

When the host runs as root, the sandbox is started as an unprivileged user (``nobody``): the kernel exempts uid 0 from
``RLIMIT_NPROC``, so a fork bomb would otherwise be unbounded. The interpreter must then be readable by that user; a
pyenv interpreter under ``/root`` is not, and the sandbox falls back to ``/usr/bin/python3``.

Without ``bwrap`` (or where the kernel forbids unprivileged user namespaces) :class:`Sandbox` refuses to start unless
``mode="unsafe"`` is chosen explicitly: the same harness and limits, but no namespaces, with a warning.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

HARNESS = (Path(__file__).with_name("code_harness.py")).read_text()
NOBODY = 65534
_MB = 1 << 20


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed program."""

    cpu_seconds: int = 10
    """RLIMIT_CPU of each process (the wall-clock timeout is separate)."""
    memory_mb: int = 1024
    """RLIMIT_AS of each process, in MiB."""
    file_size_mb: int = 16
    """RLIMIT_FSIZE: the largest file a process may write, in MiB."""
    processes: int = 32
    """RLIMIT_NPROC, counted inside the sandbox's user namespace."""
    open_files: int = 64
    """RLIMIT_NOFILE."""
    output_bytes: int = 1 << 20
    """Bytes of stdout and stderr read; more kills the sandbox and fails the program."""
    tmp_mb: int = 64
    """Size of the private ``/tmp``, in MiB."""

    def rlimits(self, with_nproc: bool) -> dict[str, int]:
        limits = {
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_AS": self.memory_mb * _MB,
            "RLIMIT_FSIZE": self.file_size_mb * _MB,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CORE": 0,
        }
        if with_nproc:
            limits["RLIMIT_NPROC"] = self.processes
        return limits


@dataclass(frozen=True)
class SandboxRun:
    """What one sandboxed run left behind."""

    verdict: str | None
    """The judge's line (``PASS`` or ``FAIL <reason>``), or None when it wrote none."""
    output: str
    """Captured stdout and stderr, truncated to the output limit."""
    timed_out: bool = False
    """The wall-clock timeout killed the sandbox."""
    output_exceeded: bool = False
    """The program wrote more than the output limit and was killed."""
    returncode: int | None = None
    """Exit status of the sandbox's top process."""

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS" and not self.timed_out and not self.output_exceeded


class Sandbox:
    """Runs a code-test job in bubblewrap (or, when asked explicitly, in a plain subprocess)."""

    def __init__(
        self,
        mode: Literal["bwrap", "unsafe"] = "bwrap",
        python: str | None = None,
        limits: SandboxLimits | None = None,
        bwrap: str = "bwrap",
    ) -> None:
        """Check that the sandbox can start.

        Args:
            mode: ``bwrap`` (namespaces, required by default) or ``unsafe`` (a plain subprocess with limits only;
                warns).
            python: The interpreter run inside; default: this interpreter if the sandbox user can read it, else
                ``/usr/bin/python3``. Only its standard library is available (``-I -S``).
            limits: Resource limits; default :class:`SandboxLimits`.
            bwrap: The bubblewrap executable.

        Raises:
            RuntimeError: ``mode="bwrap"`` and bubblewrap is missing or cannot create namespaces here.
            ValueError: an unknown ``mode``.
        """
        if mode not in ("bwrap", "unsafe"):
            raise ValueError(f"sandbox mode must be 'bwrap' or 'unsafe', got {mode!r}")
        self.mode = mode
        self.limits = limits or SandboxLimits()
        self.drop_to = NOBODY if (mode == "bwrap" and os.geteuid() == 0) else None
        self.python = python or _default_python(readable_by_others=self.drop_to is not None)
        if mode == "unsafe":
            warnings.warn(
                "code sandbox mode 'unsafe': generated code runs WITHOUT namespaces (it can read your files and "
                "network); use only on a throwaway machine",
                RuntimeWarning,
                stacklevel=2,
            )
            self.bwrap = None
            return
        found = shutil.which(bwrap)
        if found is None:
            raise RuntimeError(
                "the code verifier needs bubblewrap: install it (Debian/Ubuntu: apt-get install bubblewrap) or "
                "choose sandbox: unsafe explicitly to run generated code without isolation"
            )
        self.bwrap = found
        _probe(tuple(self._command(verdict_fd=None, probe=True)), self.drop_to)

    def run(self, job: dict[str, Any], timeout: float) -> SandboxRun:
        """Run the harness on ``job`` (``program``, ``test``, ``entry_point``); never raises for what the code does.

        Args:
            job: What the judge needs; the resource limits are added here.
            timeout: Wall-clock seconds before the whole sandbox is killed.

        Returns:
            The judge's verdict line and the captured output.
        """
        payload = json.dumps({**job, "limits": self.limits.rlimits(with_nproc=self.mode == "bwrap")}).encode()
        verdict_r, verdict_w = os.pipe()
        with tempfile.TemporaryDirectory(prefix="caopd-sbx-") as workdir:
            try:
                proc = self._spawn(verdict_w, workdir)
            except BaseException:
                os.close(verdict_r)
                raise
            finally:
                os.close(verdict_w)
            try:
                return _collect(proc, payload, verdict_r, timeout, self.limits.output_bytes)
            finally:
                os.close(verdict_r)
                _kill_group(proc)

    def _spawn(self, verdict_w: int, workdir: str) -> subprocess.Popen:
        kwargs: dict[str, Any] = {}
        if self.drop_to is not None:
            kwargs = {"user": self.drop_to, "group": self.drop_to, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return subprocess.Popen(
            self._command(verdict_w),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(verdict_w,),
            start_new_session=True,
            cwd=workdir if self.mode == "unsafe" else "/",
            env={**env, "HOME": workdir} if self.mode == "unsafe" else env,
            **kwargs,
        )

    def _command(self, verdict_fd: int | None, probe: bool = False) -> list[str]:
        inner = [self.python, "-I", "-S", "-c", "pass" if probe else HARNESS]
        inner += [] if probe else [str(verdict_fd)]
        if self.mode == "unsafe":
            return inner
        return [self.bwrap, *_bwrap_args(self.python, self.limits.tmp_mb), *inner]


def _bwrap_args(python: str, tmp_mb: int) -> list[str]:
    args = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try"]
    args += ["--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    args += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    args += ["--setenv", "LANG", "C.UTF-8"]
    args += ["--uid", str(NOBODY), "--gid", str(NOBODY), "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            args += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            args += ["--ro-bind", str(target), str(target)]
    prefix = _prefix(python)
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        args += ["--ro-bind", prefix, prefix]
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb * _MB), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    args += ["--remount-ro", "/"]  # the sandbox root is a tmpfs: only /tmp stays writable
    return args


def _prefix(python: str) -> str:
    return str(Path(os.path.realpath(python)).parent.parent)


def _default_python(readable_by_others: bool) -> str:
    own = os.path.realpath(sys.executable)
    if not readable_by_others or _world_readable(own):
        return own
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    raise RuntimeError(
        f"running as root, the sandbox runs as 'nobody', which cannot read {own}; pass python: a world-readable "
        "interpreter (e.g. /usr/bin/python3)"
    )


def _world_readable(path: str) -> bool:
    current = Path(path)
    for parent in reversed(current.parents):
        if not parent.stat().st_mode & stat.S_IXOTH:
            return False
    return bool(current.stat().st_mode & stat.S_IXOTH) and bool(Path(_prefix(path)).stat().st_mode & stat.S_IROTH)


@lru_cache(maxsize=8)
def _probe(command: tuple[str, ...], drop_to: int | None) -> None:
    kwargs = {"user": drop_to, "group": drop_to, "extra_groups": []} if drop_to is not None else {}
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, env={}, cwd="/", **kwargs)
    if done.returncode != 0:
        raise RuntimeError(
            f"bubblewrap cannot start a sandbox here (exit {done.returncode}): {done.stderr.strip()[:500]}. "
            "Unprivileged user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone, "
            "user.max_user_namespaces, or AppArmor's restrict_unprivileged_userns)."
        )


def _collect(proc: subprocess.Popen, payload: bytes, verdict_r: int, timeout: float, cap: int) -> SandboxRun:
    deadline = time.monotonic() + timeout
    try:
        proc.stdin.write(payload)
        proc.stdin.close()
    except OSError:
        pass  # the sandbox died before reading its job; the missing verdict says so
    output, verdict = bytearray(), bytearray()
    open_fds = {proc.stdout.fileno(): output, verdict_r: verdict}
    timed_out = exceeded = False
    with selectors.DefaultSelector() as selector:
        for fd in open_fds:
            selector.register(fd, selectors.EVENT_READ)
        while open_fds and not (timed_out or exceeded):
            left = deadline - time.monotonic()
            timed_out = left <= 0
            if verdict_r not in open_fds and proc.poll() is not None:
                break  # the judge is done; output held open by a stray descendant is not waited for
            wait = max(left, 0) if verdict_r in open_fds else min(max(left, 0), 0.05)
            for key, _ in selector.select(timeout=wait):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    del open_fds[key.fd]
                    continue
                open_fds[key.fd].extend(chunk)
                exceeded = len(output) > cap or len(verdict) > 65536
    returncode = _kill_group(proc)
    text = bytes(verdict).decode("utf-8", "replace").strip()
    return SandboxRun(
        verdict=text or None,
        output=bytes(output[:cap]).decode("utf-8", "replace"),
        timed_out=timed_out,
        output_exceeded=exceeded,
        returncode=returncode,
    )


def _kill_group(proc: subprocess.Popen) -> int | None:
    """SIGKILL the sandbox's process group (bwrap's die-with-parent and the PID namespace take the rest)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.stdout:
            proc.stdout.close()
