"""A bubblewrap sandbox for generated Python, with the verdict decided outside it.

Each run starts ``bwrap`` with new user, PID, network, IPC, UTS and cgroup namespaces, a cleared environment, a
read-only ``/usr`` (plus the interpreter's prefix), a read-only ``/dev`` of five devices (no pseudo-terminals: they
come from one pool for the whole machine), no ``/etc``, ``/home`` or repository, and a seccomp filter
(:func:`seccomp_filter`: every socket family but AF_UNIX, new user namespaces, and the kernel objects no rlimit counts).
The harness (:mod:`caopd_pl.verifiers.code_harness`) runs as the namespace's PID 1 (``--as-pid-1``: there is no bwrap
init a candidate could ptrace), mounts the private ``/tmp`` (the only writable mount, capped in size and inodes) with
the two capabilities bwrap leaves it, drops them for good, sets hard resource limits (CPU time, address space, file
size, processes, open files, locked memory, queued signals) and runs the untrusted program in a separate process from
the test. The host reads the verdict only from a pipe that the untrusted process never holds; stdout is captured for
the verdict's detail and capped. The host waits with poll and epoll: any descriptor number works.

Every process a candidate starts is gone when :meth:`Sandbox.run` returns: bwrap reports PID 1's host pid on
``--info-fd``; the host holds a pidfd to it and, after the verdict (or at the deadline), SIGKILLs it and waits for it
to exit. A PID namespace's init cannot survive SIGKILL from the parent namespace, and the kernel kills and reaps every
other process of the namespace before init finishes exiting, whatever the candidate did to its own processes.

When the host runs as root, the sandbox is started as an unprivileged user (``nobody``): the kernel exempts uid 0 from
``RLIMIT_NPROC``, so a fork bomb would otherwise be unbounded. The interpreter must then be readable by that user; a
pyenv interpreter under ``/root`` is not, and the sandbox falls back to ``/usr/bin/python3``.

Without ``bwrap`` (or where the kernel forbids unprivileged user namespaces) :class:`Sandbox` refuses to start unless
``mode="unsafe"`` is chosen explicitly: the same harness and limits, but no namespaces, with a warning.
"""

from __future__ import annotations

import json
import os
import platform
import select
import selectors
import shutil
import signal
import stat
import struct
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
    tmp_files: int = 4096
    """Inodes of the private ``/tmp`` (files, directories, links; tmpfs ``nr_inodes``): about 1 KiB of kernel memory
    each, which its size does not count."""

    def rlimits(self, with_nproc: bool) -> dict[str, int]:
        limits = {
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_AS": self.memory_mb * _MB,
            "RLIMIT_FSIZE": self.file_size_mb * _MB,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CORE": 0,
            "RLIMIT_MEMLOCK": 0,  # locked pages could not be reclaimed from the host
            "RLIMIT_SIGPENDING": 64,  # queued signals are kernel memory, charged per user
            "RLIMIT_RTPRIO": 0,  # no real-time scheduling, whatever the host's own limits allow
            "RLIMIT_NICE": 0,  # no priority above the host's processes
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
    started: bool = True
    """bwrap created the sandbox (it reported PID 1); False means nothing of the candidate ever ran."""

    @property
    def passed(self) -> bool:
        return self.verdict == "PASS" and not self.timed_out and not self.output_exceeded


# System calls denied inside the sandbox (EPERM): name, x86_64 number, aarch64 number ("-": no such call), and why.
_DENIED_TABLE = """
ptrace                  101 117  reading or steering another process (the judge is also non-dumpable; this holds
process_vm_readv        310 270    even for processes that are not)
process_vm_writev       311 271
pidfd_getfd             438 438
shmget                   29 194  memory RLIMIT_AS does not count: SysV and POSIX IPC objects (they outlive their
shmat                    30 196    creator; semaphore sets are unreclaimable kernel memory), a memfd's pages (not
msgget                   68 186    mapped until mmapped), the pages a pipe still holds after vmsplice and munmap
semget                   64 190
mq_open                 240 180
memfd_create            319 279
memfd_secret            447 447
vmsplice                278  75
io_setup                206   0  kernel objects outside every rlimit, from machine-wide pools: asynchronous I/O
io_uring_setup          425 425    contexts (fs.aio-max-nr), io_uring (its operations are not seen by seccomp),
io_uring_enter          426 426    keys (quotas per user), inotify and fanotify instances (per user), timers,
io_uring_register       427 427    userfaultfd, perf events, BPF objects, Landlock rulesets
add_key                 248 217
request_key             249 218
keyctl                  250 219
inotify_init            253   -
inotify_init1           294  26
fanotify_init           300 262
timer_create            222 107
userfaultfd             323 282
perf_event_open         298 241
bpf                     321 280
landlock_create_ruleset 444 444
seccomp                 317 277  filters (and prctl's PR_SET_SECCOMP): JIT space from net.core.bpf_jit_limit
flock                    73  32  unreclaimable kernel memory in any number: file locks (byte-range ones in fcntl
setxattr                188   5    below), extended attributes
lsetxattr               189   6
fsetxattr               190   7
setxattrat              463 463
sync                    162  81  work done for the whole machine: writeback of every filesystem, the kernel's log
syncfs                  306 267
syslog                  103 116
"""
_DENIED = {
    fields[0]: (int(fields[1]), None if fields[2] == "-" else int(fields[2]))
    for fields in (line.split() for line in _DENIED_TABLE.strip().splitlines())
}
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*
# Calls allowed or denied by one argument (its low 32 bits, which hold every value checked here). "only": allowed for
# these values; "deny": denied for these values; "bits": denied when any of these bits is set.
_AF_UNIX = 1  # the one socket family allowed: its abstract names are per network namespace, its files in /tmp
_CLONE_NEWUSER, _MAP_HUGETLB = 0x10000000, 0x40000
# F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW (a lock per byte range), F_SETLEASE, F_NOTIFY, F_SETPIPE_SZ
_FCNTL_DENIED = (6, 7, 37, 38, 1024, 1026, 1031)
_PR_SET_SECCOMP = 22
_ARGUMENT_RULES = (  # (name, x86_64 number, aarch64 number, argument index, test, values)
    ("socket", 41, 198, 0, "only", (_AF_UNIX,)),
    ("socketpair", 53, 199, 0, "only", (_AF_UNIX,)),
    ("clone", 56, 220, 0, "bits", (_CLONE_NEWUSER,)),  # no user namespace: no capabilities over new ones
    ("unshare", 272, 97, 0, "bits", (_CLONE_NEWUSER,)),
    ("mmap", 9, 222, 3, "bits", (_MAP_HUGETLB,)),  # the machine's huge page pool
    ("fcntl", 72, 25, 1, "deny", _FCNTL_DENIED),
    ("prctl", 157, 167, 0, "deny", (_PR_SET_SECCOMP,)),  # the other way to install a seccomp filter
)
_CLONE3 = 435  # its flags are behind a pointer seccomp cannot read: ENOSYS, and the C library falls back to clone
_X32_BIT = 0x40000000  # x86_64's x32 ABI numbers: another way into the same calls
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|{JEQ,JGE,JSET}|K, BPF_RET|K
_ALLOW, _KILL = 0x7FFF0000, 0x80000000  # SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS
_EPERM, _ENOSYS = 0x00050001, 0x00050026  # SECCOMP_RET_ERRNO | errno
_ARG_OFFSET = 16  # seccomp_data: nr, arch, instruction_pointer, then args[6] of 8 bytes (low word first)


def denied_syscalls(machine: str) -> dict[str, int]:
    """The calls the filter denies outright on ``machine``, by name."""
    column = 0 if machine == "x86_64" else 1
    return {name: numbers[column] for name, numbers in _DENIED.items() if numbers[column] is not None}


@lru_cache(maxsize=1)
def seccomp_filter() -> bytes:
    """The sandbox's seccomp program (classic BPF, as ``bwrap --seccomp`` reads it); a call from another ABI kills.

    Raises:
        RuntimeError: this machine's architecture has no syscall table here.
    """
    machine = platform.machine()
    if machine not in _ARCH:
        raise RuntimeError(f"the code sandbox's seccomp filter knows x86_64 and aarch64, not {machine}")
    column = 1 if machine == "x86_64" else 2
    program: list[Any] = [(_LD_ABS, 0, 0, 4), (_JEQ, 0, "kill", _ARCH[machine]), (_LD_ABS, 0, 0, 0)]
    program += [(_JGE, "deny", 0, _X32_BIT)] if machine == "x86_64" else []
    program += [(_JEQ, "deny", 0, number) for number in denied_syscalls(machine).values()]
    program += [(_JEQ, "enosys", 0, _CLONE3)]
    program += [(_JEQ, rule[0], 0, rule[column]) for rule in _ARGUMENT_RULES]
    program += [(_RET, 0, 0, _ALLOW)]
    for name, _, _, index, test, values in _ARGUMENT_RULES:
        program += [name, (_LD_ABS, 0, 0, _ARG_OFFSET + 8 * index)]
        if test == "only":
            program += [(_JEQ, "allow", 0, value) for value in values] + [(_RET, 0, 0, _EPERM)]
        else:
            program += [(_JSET if test == "bits" else _JEQ, "deny", 0, value) for value in values]
            program += [(_RET, 0, 0, _ALLOW)]
    program += ["allow", (_RET, 0, 0, _ALLOW), "deny", (_RET, 0, 0, _EPERM), "enosys", (_RET, 0, 0, _ENOSYS)]
    program += ["kill", (_RET, 0, 0, _KILL)]
    return _assemble(program)


def _assemble(program: list[Any]) -> bytes:
    """Classic BPF from instructions ``(code, jump_true, jump_false, k)`` whose jumps may name a label (a string)."""
    labels, position = {}, 0
    for item in program:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    out, position = [], 0
    for item in program:
        if isinstance(item, str):
            continue
        code, *jumps, k = item
        jumps = [labels[jump] - position - 1 if isinstance(jump, str) else jump for jump in jumps]
        if not all(0 <= jump < 256 for jump in jumps):
            raise AssertionError(f"seccomp filter: a jump out of range at instruction {position}")
        out.append(struct.pack("<HBBI", code, *jumps, k))
        position += 1
    return b"".join(out)


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
            RuntimeError: ``mode="bwrap"`` and bubblewrap is missing or cannot create namespaces here (or the
                harness cannot mount its ``/tmp`` in them), or the machine is neither x86_64 nor aarch64 (no seccomp
                syscall table).
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
        seccomp_filter()  # an architecture without a syscall table fails here, not on the first program
        _probe(tuple(self._command(None)), self.drop_to)

    def run(self, job: dict[str, Any], timeout: float) -> SandboxRun:
        """Run the harness on ``job`` (``program``, ``test``, ``entry_point``); never raises for what the code does.

        Every process of the sandbox has exited when this returns.

        Args:
            job: What the judge needs; the resource limits are added here.
            timeout: Wall-clock seconds before the whole sandbox is killed.

        Returns:
            The judge's verdict line and the captured output.
        """
        payload = _frames(job, self.limits.rlimits(with_nproc=self.mode == "bwrap"))
        deadline = time.monotonic() + timeout
        with tempfile.TemporaryDirectory(prefix="caopd-sbx-") as workdir, _Pipes(self.mode == "bwrap") as pipes:
            proc = self._spawn(pipes, workdir)
            pipes.close_child_ends()
            init = _Init()
            try:
                if pipes.info_r is not None and not init.attach(proc, pipes.info_r, deadline):
                    return _not_started(proc, self.limits.output_bytes)
                return _collect(proc, payload, pipes.verdict_r, deadline, self.limits.output_bytes)
            finally:
                init.kill()
                _kill_group(proc)

    def _spawn(self, pipes: _Pipes, workdir: str) -> subprocess.Popen:
        kwargs: dict[str, Any] = {}
        if self.drop_to is not None:
            kwargs = {"user": self.drop_to, "group": self.drop_to, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        return subprocess.Popen(
            self._command(pipes),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=pipes.child_ends(),
            start_new_session=True,
            cwd=workdir if self.mode == "unsafe" else "/",
            env={**env, "HOME": workdir} if self.mode == "unsafe" else env,
            **kwargs,
        )

    def _command(self, pipes: _Pipes | None) -> list[str]:
        """The harness's command line; without ``pipes``, the probe (it sets the sandbox up, then exits)."""
        inner = [self.python, "-I", "-S", "-c", HARNESS, "probe" if pipes is None else str(pipes.verdict_w)]
        if self.mode == "unsafe":
            return inner
        fds = [] if pipes is None else ["--info-fd", str(pipes.info_w), "--seccomp", str(pipes.seccomp_r)]
        tmpfs = f"size={self.limits.tmp_mb * _MB},nr_inodes={self.limits.tmp_files},mode=1777"
        return [self.bwrap, *_bwrap_args(self.python), *fds, *inner, tmpfs]


def _frames(job: dict[str, Any], limits: dict[str, int]) -> bytes:
    """The harness's stdin: a length-prefixed first frame (program, limits), then the test; see code_harness."""
    head = json.dumps({"program": job["program"], "limits": limits}).encode()
    tail = json.dumps({key: value for key, value in job.items() if key != "program"}).encode()
    return f"{len(head):016d}".encode() + head + tail


class _Pipes:
    """The descriptors of one run: verdict (judge -> host), info (bwrap -> host), seccomp program (host -> bwrap)."""

    def __init__(self, namespaced: bool) -> None:
        self.verdict_r, self.verdict_w = os.pipe()
        self.info_r = self.info_w = self.seccomp_r = None
        if namespaced:
            self.info_r, self.info_w = os.pipe()
            self.seccomp_r, seccomp_w = os.pipe()
            os.write(seccomp_w, seccomp_filter())  # a few hundred bytes: fits in the pipe's buffer
            os.close(seccomp_w)

    def child_ends(self) -> tuple[int, ...]:
        return tuple(fd for fd in (self.verdict_w, self.info_w, self.seccomp_r) if fd is not None)

    def close_child_ends(self) -> None:
        for fd in self.child_ends():
            os.close(fd)
        self.verdict_w = self.info_w = self.seccomp_r = None

    def __enter__(self) -> _Pipes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_child_ends()
        for fd in (self.verdict_r, self.info_r):
            if fd is not None:
                os.close(fd)


class _Init:
    """The sandbox's PID 1 as a pidfd: killing it ends the whole PID namespace, and a pidfd never names a reused pid."""

    def __init__(self) -> None:
        self.pidfd: int | None = None

    def attach(self, proc: subprocess.Popen, info_r: int, deadline: float) -> bool:
        """Learn PID 1 from bwrap's ``--info-fd``; False when bwrap never created it (or it is gone already)."""
        pid = _read_child_pid(info_r, deadline)
        if pid is None:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False  # PID 1 exited before the job was even sent: its interpreter failed to start
        if _parent_of(pid) != proc.pid:  # no longer bwrap's child: the pid was reused
            os.close(pidfd)
            return False
        self.pidfd = pidfd
        return True

    def kill(self) -> None:
        """SIGKILL PID 1 and wait until it (hence every process of its namespace) has exited."""
        if self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _readable(self.pidfd, 30)  # readable once PID 1 exited; it exits after its namespace emptied
        os.close(self.pidfd)
        self.pidfd = None


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` is readable (or at its end) within ``timeout`` seconds. poll(2), not select: select refuses a
    descriptor numbered 1,024 or more, which a training process holding many files gets."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(timeout, 0) * 1000))


def _read_child_pid(info_r: int, deadline: float) -> int | None:
    """PID 1's host pid from bwrap's ``--info-fd`` JSON; None when bwrap ended (or the deadline came) first."""
    data = bytearray()
    while time.monotonic() < deadline:
        chunk = os.read(info_r, 4096) if _readable(info_r, deadline - time.monotonic()) else b""
        data.extend(chunk)
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            if not chunk:
                return None
    return None


def _parent_of(pid: int) -> int | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_line.rsplit(")", 1)[1].split()[1])  # the name in parentheses may hold spaces


def _not_started(proc: subprocess.Popen, cap: int) -> SandboxRun:
    """bwrap ended (or hung) before creating the sandbox: no candidate code ran; bwrap's message is the output."""
    returncode = _kill_group(proc, close=False)
    output = bytearray()
    while len(output) <= cap and _readable(proc.stdout.fileno(), 1):
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        output.extend(chunk)
    proc.stdout.close()
    text = bytes(output[:cap]).decode("utf-8", "replace")
    return SandboxRun(verdict=None, output=text, returncode=returncode, started=False)


def _bwrap_args(python: str) -> list[str]:
    args = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    # The harness mounts /tmp itself (bwrap cannot cap a tmpfs's inodes), then drops both capabilities for good before
    # it reads the program. Not --disable-userns: its nested user namespace would not own the mounts; seccomp denies
    # new user namespaces instead.
    args += ["--cap-drop", "ALL", "--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_SETPCAP"]
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
    # /dev holds five devices and no devpts: pseudo-terminals come from one pool for the whole machine (kernel.pty.max).
    args += ["--proc", "/proc", "--tmpfs", "/dev"]
    for name in ("null", "zero", "full", "random", "urandom"):
        args += ["--dev-bind", f"/dev/{name}", f"/dev/{name}"]
    for name, target in (("fd", ""), ("stdin", "/0"), ("stdout", "/1"), ("stderr", "/2")):
        args += ["--symlink", f"/proc/self/fd{target}", f"/dev/{name}"]
    # The root and /dev are tmpfs sized at half the host's RAM: read-only, so the sized /tmp is the only place to write.
    args += ["--dir", "/tmp", "--remount-ro", "/", "--remount-ro", "/dev", "--as-pid-1"]
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
            "Unprivileged user namespaces, or capabilities inside them, may be disabled (sysctl "
            "kernel.unprivileged_userns_clone, user.max_user_namespaces, or AppArmor's restrict_unprivileged_userns)."
        )


def _collect(proc: subprocess.Popen, payload: bytes, verdict_r: int, deadline: float, cap: int) -> SandboxRun:
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


def _kill_group(proc: subprocess.Popen, close: bool = True) -> int | None:
    """SIGKILL the process group of bwrap's outer process (the namespace's processes are ``_Init.kill``'s)."""
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
        if proc.stdout and close:
            proc.stdout.close()
