"""Attack class: kernel resources outside every rlimit. Socket families other than AF_UNIX, the machine's pools
(pseudo-terminals, AIO contexts, huge pages, keys, inotify instances, seccomp filters' JIT space), kernel objects (SysV
and POSIX IPC, timers, file locks, extended attributes, inodes) and new user namespaces or capabilities are refused or
capped.

Each candidate tries a class, keeps whatever it got, renames itself and waits; meanwhile the host reads its own counters
(``/proc/sys/kernel/pty/nr``, ``/proc/sys/fs/aio-nr``, ``/proc/key-users``, ``SUnreclaim`` and huge pages in
``/proc/meminfo``) and the candidate's process from outside (its descriptors, mappings, POSIX timers, file locks in
``/proc/locks``, capabilities, user namespace, seccomp filters, and the SysV objects of its IPC namespace). The
candidate reports what succeeded, so the verdict is PASS exactly when it got nothing. ``judge`` (conftest) also checks
the host's process table and shared memory after each verdict.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

KERNEL_NOISE = 64 << 20
"""Unreclaimable kernel memory may move this much for reasons of its own; the attacks here reach GiBs unbounded."""
HOLD_SECONDS = 0.6
NOTHING_GOT = "def check(candidate):\n    got = candidate()\n    assert got == [], got\n"
FORBIDDEN_DESCRIPTORS = ("socket:", "/dev/pts", "ptmx", "inotify", "fanotify", "io_uring", "userfaultfd")
FORBIDDEN_DESCRIPTORS += ("perf_event", "bpf", "landlock", "memfd:", "secretmem", "hugetlb")

# What every attack starts with: a raw system call (its result, or -errno) and ``attempt``, which reports a success,
# or a refusal other than the one expected (the filter's EPERM: the kernel itself would have said something else).
PRELUDE = r"""
import ctypes, errno, fcntl, os, platform, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
X86 = platform.machine() == "x86_64"
GOT, KEEP = [], []
def call(x86, arm, *args):
    args = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    result = libc.syscall(ctypes.c_long(x86 if X86 else arm), *args)
    return result if result >= 0 else -ctypes.get_errno()
def attempt(label, result, expect=errno.EPERM):
    if result >= 0:
        GOT.append(label)
        KEEP.append(result)
    elif expect is not None and -result != expect:
        GOT.append((label, errno.errorcode.get(-result, -result)))
def attempt_os(label, action, expect=errno.EPERM):
    try:
        KEEP.append(action())
        GOT.append(label)
    except OSError as err:
        if expect is not None and err.errno != expect:
            GOT.append((label, errno.errorcode.get(err.errno, err.errno)))
"""

ATTACKS = {
    "socket families": r"""
for family in range(64):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW, socket.SOCK_SEQPACKET):
        if family != socket.AF_UNIX:
            attempt(("socket", family, kind), call(41, 198, family, kind, 0))
            attempt(("socketpair", family, kind), call(53, 199, family, kind, 0, (ctypes.c_int * 2)()))
""",
    "pseudo-terminals": r"""
for path in ("/dev/ptmx", "/dev/pts/ptmx", "/dev/tty", "/dev/console"):
    attempt_os(path, lambda: os.open(path, os.O_RDWR | os.O_NOCTTY), expect=None)
attempt_os("openpty", os.openpty, expect=None)
os.makedirs("/tmp/pts", exist_ok=True)
attempt("mount devpts", libc.mount(b"devpts", b"/tmp/pts", b"devpts", 0, b"newinstance") and -ctypes.get_errno())
""",
    "sysv and posix ipc": r"""
attempt("shmget", call(29, 194, 0, 1 << 20, 0o1600))
attempt("msgget", call(68, 186, 0, 0o1600))
for _ in range(64):  # 32,000 semaphores a set: unreclaimable kernel memory, MBs each
    attempt("semget", call(64, 190, 0, 32000, 0o1600))
attempt("mq_open", call(240, 180, b"caopd", os.O_CREAT | os.O_RDWR, 0o600, None))
attempt("memfd_create", call(319, 279, b"hold", 0))
attempt("memfd_secret", call(447, 447, 0))
""",
    "keys": r"""
for n in range(64):  # the user keyring, quotas per user: keys outlive the process
    attempt("add_key", call(248, 217, b"user", b"caopd%d" % n, b"x" * 4096, 4096, -4))
attempt("request_key", call(249, 218, b"user", b"caopd", None, 0))
attempt("keyctl", call(250, 219, 1, b"caopd"))  # KEYCTL_JOIN_SESSION_KEYRING
""",
    "file notification": r"""
for _ in range(8):  # fs.inotify.max_user_instances is per user: 128 by default
    attempt("inotify_init1", call(294, 26, 0))
    if X86:
        attempt("inotify_init", call(253, 253))
    attempt("fanotify_init", call(300, 262, 0x200, 0))  # FAN_REPORT_FID: allowed unprivileged
""",
    "asynchronous io": r"""
for _ in range(8):  # fs.aio-max-nr is one pool for the whole machine
    attempt("io_setup", call(206, 0, 8192, ctypes.byref(ctypes.c_ulong(0))))
    attempt("io_uring_setup", call(425, 425, 8, (ctypes.c_char * 120)()))
""",
    "kernel objects": r"""
attempt("userfaultfd", call(323, 282, 0))
attr = (ctypes.c_uint32 * 32)(1, 128, 0)  # PERF_TYPE_SOFTWARE, its size, PERF_COUNT_SW_CPU_CLOCK
attempt("perf_event_open", call(298, 241, attr, 0, -1, -1, 0))
map_attr = (ctypes.c_uint32 * 16)(2, 4, 4, 1024)  # BPF_MAP_TYPE_ARRAY of 1,024 ints
attempt("bpf", call(321, 280, 0, map_attr, 64))
for _ in range(256):  # POSIX timers: kernel objects, no rlimit of their own
    attempt("timer_create", call(222, 107, 1, None, ctypes.byref(ctypes.c_int(0))))
ruleset = (ctypes.c_uint64 * 3)(1)  # handled_access_fs: LANDLOCK_ACCESS_FS_EXECUTE
attempt("landlock_create_ruleset", call(444, 444, ruleset, 8, 0))
""",
    "seccomp filters": r"""
insns = (ctypes.c_uint64 * 1)(0x7FFF0000 << 32 | 0x06)  # one instruction: return SECCOMP_RET_ALLOW
fprog = struct.pack("<H6xQ", 1, ctypes.addressof(insns))  # struct sock_fprog
for _ in range(8):  # each filter is kernel memory and JIT space from net.core.bpf_jit_limit, one machine-wide pool
    attempt("seccomp", call(317, 277, 1, 0, fprog))  # SECCOMP_SET_MODE_FILTER
    attempt("prctl(PR_SET_SECCOMP)", call(157, 167, 22, 2, fprog))  # SECCOMP_MODE_FILTER
""",
    "file locks": r"""
fd = os.open("/tmp/locked", os.O_CREAT | os.O_RDWR, 0o600)
for start in range(0, 512, 2):  # a lock per byte range: unreclaimable kernel memory in any number
    attempt_os("F_SETLK", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, start))
attempt_os("F_OFD_SETLK", lambda: fcntl.fcntl(fd, 37, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 1, 0)))
attempt_os("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))
attempt_os("F_SETLEASE", lambda: fcntl.fcntl(fd, 1024, fcntl.F_RDLCK))
host_file = os.open("/usr/lib/os-release" if os.path.exists("/usr/lib/os-release") else "/usr/bin/env", os.O_RDONLY)
attempt_os("read lock on /usr", lambda: fcntl.lockf(host_file, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, 0))
directory = os.open("/tmp", os.O_RDONLY)
attempt_os("F_NOTIFY", lambda: fcntl.fcntl(directory, 1026, 4))  # dnotify, DN_CREATE
""",
    "pipes": r"""
read_end, write_end = os.pipe()
attempt_os("F_SETPIPE_SZ", lambda: fcntl.fcntl(write_end, 1031, 1 << 20))
page = ctypes.create_string_buffer(4096)
iov = (ctypes.c_void_p * 2)(ctypes.addressof(page), 4096)
attempt("vmsplice", call(278, 75, write_end, iov, 1, 0))
""",
    "huge pages": r"""
libc.mmap.restype = ctypes.c_void_p
address = libc.mmap(None, ctypes.c_size_t(2 << 20), 3, 0x02 | 0x20 | 0x40000, -1, ctypes.c_long(0))
attempt("mmap MAP_HUGETLB", -ctypes.get_errno() if address in (None, 2**64 - 1) else 0)
attempt("memfd MFD_HUGETLB", call(319, 279, b"huge", 4))
attempt("shmget SHM_HUGETLB", call(29, 194, 0, 2 << 20, 0o1600 | 0o4000))
""",
    "namespaces and capabilities": r"""
import subprocess, sys, threading
attempt("unshare(CLONE_NEWUSER)", call(272, 97, 0x10000000))
child = call(56, 220, 0x10000000 | 17, 0, 0, 0, 0)  # clone(CLONE_NEWUSER | SIGCHLD)
if child == 0:
    os._exit(0)
attempt("clone(CLONE_NEWUSER)", child)
attempt("clone3", call(435, 435, None, 0), expect=errno.ENOSYS)
attempt("mount tmpfs", libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) and -ctypes.get_errno())
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
GOT += [name for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb") if int(status[name], 16)]
box = []  # what programs use still works: threads (clone3 falls back to clone), subprocesses
thread = threading.Thread(target=box.append, args=(1,))
thread.start()
thread.join()
GOT += [] if box == [1] else ["threads broken"]
GOT += [] if subprocess.run([sys.executable, "-I", "-S", "-c", "pass"]).returncode == 0 else ["subprocess broken"]
""",
    "machine-wide calls": r"""
attempt("sync", call(162, 81))
attempt("syncfs", call(306, 267, 0))
attempt("syslog", call(103, 116, 10, None, 0))  # SYSLOG_ACTION_SIZE_BUFFER
attempt_os("SCHED_FIFO", lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1)), expect=None)
attempt_os("nice -5", lambda: os.setpriority(os.PRIO_PROCESS, 0, -5), expect=None)
""",
}

# They write until a cap stops them (or for a few seconds if none does).
XATTRS = r"""
import time
value = b"x" * 65536
start, fd = time.monotonic(), None
for n in range(2048):
    path = f"/tmp/x{n}"
    if time.monotonic() - start > 4:
        break
    try:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    except OSError:
        break
    attempt_os("setxattr", lambda: os.setxattr(path, "user.a", value))
    attempt_os("lsetxattr", lambda: os.setxattr(path, "user.b", value, follow_symlinks=False))
    attempt_os("fsetxattr", lambda: os.setxattr(fd, "user.c", value))
    os.close(fd)
buffer = ctypes.create_string_buffer(value)
args = (ctypes.c_uint64 * 2)(ctypes.addressof(buffer), len(value))  # struct xattr_args: value, size, flags
attempt("setxattrat", call(463, 463, -100, b"/tmp/x0", 0, b"user.d", args, 16))
"""
INODES = r"""
import time
open("/tmp/base", "w").close()
KINDS = (lambda p: open(p, "w").close(), os.mkdir, os.mkfifo)
KINDS += (lambda p: os.symlink("/tmp/base", p), lambda p: os.link("/tmp/base", p))
made, failed, start = 0, 0, time.monotonic()
while failed < len(KINDS) and time.monotonic() - start < 5:  # round robin until every kind fails in a row
    try:
        KINDS[(made + failed) % len(KINDS)](f"/tmp/i{made}")
        made, failed = made + 1, 0
    except OSError:
        failed += 1
CAP = os.statvfs("/tmp").f_files
GOT += [] if made < CAP <= 4096 else [("inodes", made, CAP)]
"""


def meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * (1024 if line.endswith("kB") else 1)
    raise AssertionError(f"no {field} in /proc/meminfo")


def host_counters() -> dict[str, Any]:
    """The host's own view of its machine-wide pools and of its unreclaimable kernel memory."""
    return {
        "pty": int(Path("/proc/sys/kernel/pty/nr").read_text()),
        "aio": int(Path("/proc/sys/fs/aio-nr").read_text()),
        "key-users": Path("/proc/key-users").read_text(),
        "SUnreclaim": meminfo("SUnreclaim"),
        "huge pages": (meminfo("HugePages_Free"), meminfo("HugePages_Rsvd")),
    }


def ipc_objects(pid: int) -> list[str]:
    """The SysV objects of ``pid``'s IPC namespace, read by a helper that joins it (setns needs a privileged host)."""
    script = (
        "import ctypes, sys\nnamespace = open(f'/proc/{sys.argv[1]}/ns/ipc')\nfd = namespace.fileno()\n"
        "assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x08000000) == 0, 'setns'\n"
        "for kind in ('shm', 'msg', 'sem'):\n"
        "    print(*open(f'/proc/sysvipc/{kind}').read().splitlines()[1:], sep='\\n')\n"
    )
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script, str(pid)], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else ["unreadable"]


def lock_owner(line: str) -> int:
    """The pid in a ``/proc/locks`` line (``1: POSIX  ADVISORY  WRITE 1234 00:2a:7 0 EOF``, maybe with ``->``)."""
    return int(line.replace("->", "").split()[4])


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {name: value.strip() for name, value in (line.split(":", 1) for line in lines)}


def candidate_census(pids: list[int]) -> dict[str, Any]:
    """What the candidate's processes hold, read from the host (as root: the candidate is not dumpable)."""
    fds, maps, timers, caps, namespaces, filters = [], [], [], set(), set(), set()
    judge = int(Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    for pid in [judge, *pids]:
        filters.add(int(proc_status(pid)["Seccomp_filters"]))  # the judge's: bwrap's filter
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        fds += [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        maps += [line for line in (proc / "maps").read_text().splitlines() if "aio" in line or "huge" in line]
        timers += (proc / "timers").read_text().splitlines()
        status = proc_status(pid)
        caps |= {(name, status[name]) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        namespaces.add(os.readlink(proc / "ns" / "user"))
    locks = [line for line in Path("/proc/locks").read_text().splitlines() if lock_owner(line) in pids]
    return {
        "descriptors": sorted({fd for fd in fds if any(kind in fd for kind in FORBIDDEN_DESCRIPTORS)}),
        "aio or huge mappings": maps,
        "posix timers": timers,
        "file locks": locks,
        "capabilities": sorted(cap for cap in caps if int(cap[1], 16)),
        "user namespaces": namespaces - {os.readlink(f"/proc/{judge}/ns/user")},
        "sysv objects": ipc_objects(pids[0]),
        "seccomp filter counts": filters,
    }


def host_reading(pids: list[int]) -> dict[str, Any]:
    return {"host": host_counters(), "candidate": candidate_census(pids) if os.geteuid() == 0 else None}


def assert_nothing_held(before: dict[str, Any], during: dict[str, Any]) -> None:
    host = during["host"]
    assert host["pty"] <= before["pty"], f"pseudo-terminals taken from the machine's pool: {before} -> {host}"
    assert host["aio"] <= before["aio"], f"AIO contexts taken from the machine's pool: {before} -> {host}"
    assert host["key-users"] == before["key-users"], f"keys were added: {before} -> {host}"
    assert host["SUnreclaim"] - before["SUnreclaim"] < KERNEL_NOISE, f"kernel memory grew: {before} -> {host}"
    assert host["huge pages"] == before["huge pages"], f"huge pages taken from the pool: {before} -> {host}"
    if during["candidate"] is not None:  # reading another user's /proc entries needs root
        assert during["candidate"] == {
            "descriptors": [],
            "aio or huge mappings": [],
            "posix timers": [],
            "file locks": [],
            "capabilities": [],
            "user namespaces": set(),
            "sysv objects": [],
            "seccomp filter counts": {1},  # bwrap's alone, in the judge and every candidate process
        }


def run_attack(judge, verifier, holding, attack: str, read=host_reading):
    before = host_counters()
    watch = holding.watch(read)
    program = PRELUDE + attack + holding.lines(HOLD_SECONDS) + "def solve():\n    return GOT\n"
    verdict = judge(program, test=NOTHING_GOT, verifier_=verifier)
    during = watch.done()
    assert holding.alive() == [], "the candidate outlived its verdict"
    return verdict, before, during


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_kernel_resources_are_refused_and_the_host_sees_none_held(judge, slow_verifier, holding, attack):
    verdict, before, during = run_attack(judge, slow_verifier, holding, ATTACKS[attack])
    assert_nothing_held(before, during)
    assert verdict.correct, f"the candidate got: {verdict.detail}"


@pytest.mark.parametrize("attack", [XATTRS, INODES], ids=["extended attributes", "inodes"])
def test_tmp_holds_no_extended_attributes_and_a_capped_number_of_inodes(judge, slow_verifier, holding, attack):
    verdict, before, during = run_attack(judge, slow_verifier, holding, attack)
    assert_nothing_held(before, during)
    assert verdict.correct, f"the candidate got: {verdict.detail}"


def test_the_hosts_vsock_port_stays_free_while_the_candidate_runs(judge, slow_verifier, holding):
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
    except (AttributeError, OSError):
        pytest.skip("this host has no AF_VSOCK")
    port = random.randrange(20000, 60000)
    attack = (
        "def vsock():\n    held = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n"
        f"    held.bind((socket.VMADDR_CID_ANY, {port}))\n    held.listen(1)\n    return held\n"
        "attempt_os('vsock bind', vsock)\n"
    )

    def bind_on_host(pids: list[int]) -> str:
        with socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM) as host_socket:
            try:
                host_socket.bind((socket.VMADDR_CID_ANY, port))
            except OSError as err:
                return f"the host could not bind its own port: {err}"
        return "bound"

    verdict, _, during = run_attack(judge, slow_verifier, holding, attack, read=bind_on_host)
    assert during == "bound"
    assert verdict.correct, f"the candidate got: {verdict.detail}"
