"""The program that runs *inside* the code sandbox: it keeps the test harness and the untrusted candidate apart.

Standalone and stdlib-only: the sandbox runs it as ``python -I -S -c <this source> VERDICT_FD TMPFS_OPTIONS``
(``probe`` for VERDICT_FD: set up, then exit; no TMPFS_OPTIONS outside bubblewrap), as the PID namespace's init
(PID 1: no signal from inside the sandbox can kill it, and when it exits the kernel kills every other process of the
sandbox). Two processes:

- the **judge** (this process) first mounts ``/tmp`` and drops every capability (in bubblewrap, see
  :func:`enter_sandbox`), reads the first frame of its stdin (the program and the resource limits), sets hard
  resource limits, makes itself non-dumpable (so a same-uid process can neither ptrace it nor open ``/proc/1/mem`` or
  ``/proc/1/fd``), then forks
- the **candidate**, which points its stdin at ``/dev/null`` and closes the verdict descriptor and every judge-side
  descriptor *before* it executes the untrusted program, then serves requests: ``name(*args, **kwargs)`` calls and
  reads of plain-data globals arrive as JSON, results go back as JSON.

Only then does the judge read the second frame, the test, the prompt and the entry point: the candidate's memory is a
copy of the judge's from before, so no stack walk, ``gc`` scan or read of its own memory can find the test. The judge
runs the test with each candidate function replaced by a proxy, and with what the prompt itself defines (helpers the
test calls) run here from the prompt, so a completion that redefines them changes only its own copy. A test that
never calls the program fails. Values crossing the boundary are decoded by the judge into plain built-in objects
(``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``,
``frozenset``), so an object whose ``__eq__`` always returns True, ``sys.exit(0)`` before the tests, or a printed
"passed" cannot make the judge write ``PASS``; an exception raised by the candidate reaches the test as its built-in
type, except ``StopIteration`` (which would silently end the test's ``map`` or generator), raised as
``RuntimeError``. Only the judge holds the verdict descriptor, and the host reads nothing else. Candidates must
therefore be functions taking and returning plain data (HumanEval / MBPP style).
"""

import ast
import base64
import builtins
import json
import os
import resource
import signal
import sys
import traceback

MAX_MESSAGE = 64 << 20  # bytes of one protocol line
HEADER_DIGITS = 16  # the first frame's length, in ASCII decimal
SMALL_INT = 1 << 63  # larger ints cross as hexadecimal: JSON's decimal form is capped at 4,300 digits
FLOW_CONTROL = (StopIteration, StopAsyncIteration)  # would end the test's loop instead of failing it


# ---------------------------------------------------------------------------------------------- plain-data codec
def encode(obj, depth=0):
    """Plain data -> JSON-able value; raises TypeError for anything else."""
    if depth > 200:
        raise TypeError("value nested too deeply to cross the sandbox")
    if obj is None:
        return None
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        value = int(obj)
        return value if -SMALL_INT < value < SMALL_INT else {"i": format(value, "x")}
    if isinstance(obj, float):
        value = float(obj)
        return value if value == value and value not in (float("inf"), float("-inf")) else {"x": repr(value)}
    if isinstance(obj, list):
        return [encode(item, depth + 1) for item in obj]
    if isinstance(obj, tuple):
        return {"t": [encode(item, depth + 1) for item in obj]}
    if isinstance(obj, dict):
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in obj.items()]}
    if isinstance(obj, (set, frozenset)):
        return {"f" if isinstance(obj, frozenset) else "s": [encode(item, depth + 1) for item in obj]}
    if isinstance(obj, (bytes, bytearray)):
        return {"b": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, complex):
        return {"c": [encode(obj.real, depth + 1), encode(obj.imag, depth + 1)]}
    raise TypeError(f"a {type(obj).__name__} cannot cross the sandbox (only plain built-in data can)")


def decode(value):
    """JSON-able value -> plain built-in objects only (never calls code chosen by the sender)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is list:
        return [decode(item) for item in value]
    if type(value) is dict and len(value) == 1:
        ((tag, body),) = value.items()
        if tag == "t":
            return tuple(decode(item) for item in body)
        if tag == "d":
            return {decode(k): decode(v) for k, v in body}
        if tag == "s":
            return {decode(item) for item in body}
        if tag == "f":
            return frozenset(decode(item) for item in body)
        if tag == "b":
            return base64.b64decode(body)
        if tag == "i" and type(body) is str:
            return int(body, 16)
        if tag == "c":
            return complex(float(decode(body[0])), float(decode(body[1])))
        if tag == "x" and body in ("nan", "inf", "-inf"):
            return float(body)
    raise ValueError("malformed value from the candidate")


def send(stream, message):
    stream.write(json.dumps(message).encode() + b"\n")
    stream.flush()


def receive(stream):
    line = stream.readline(MAX_MESSAGE)
    if not line:
        raise EOFError("the candidate process ended")
    if not line.endswith(b"\n"):
        raise ValueError("message from the candidate too long")
    return json.loads(line)


# ---------------------------------------------------------------------------------------------- candidate side
def serve_candidate(program, requests, replies):
    """Run the untrusted program, list its global names, then answer the judge's requests until it hangs up."""
    scope = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(program, "<candidate>", "exec"), scope)
    except BaseException as err:  # noqa: BLE001 - SystemExit included: exiting early is a failure, not a pass
        send(replies, {"load_error": f"{type(err).__name__}: {err}"})
        return
    names = {name: callable(value) for name, value in scope.items() if type(name) is str and name[:2] != "__"}
    send(replies, {"ready": names})
    while True:
        request = receive(requests)
        try:
            if "get" in request:
                result = scope[request["get"]]
            else:
                result = scope[request["call"]](*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"ok": encode(result)}
        except BaseException as err:  # noqa: BLE001 - the judge decides what a failure means
            reply = {"exc": type(err).__name__, "msg": str(err)[:2000]}
        send(replies, reply)


# ---------------------------------------------------------------------------------------------- judge side
class Channel:
    """The judge's ends of the two pipes to the candidate, and how many calls the test made through them."""

    def __init__(self, requests, replies):
        self.requests, self.replies, self.calls = requests, replies, 0


class Candidate:
    """A proxy for one function of the candidate program."""

    def __init__(self, name, channel):
        self.name, self.channel = name, channel
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        self.channel.calls += 1
        send(self.channel.requests, {"call": self.name, "args": encode(list(args)), "kwargs": encode(kwargs)})
        return answer(receive(self.channel.replies))


def answer(reply):
    """The candidate's reply as a plain value, or its exception re-raised as a built-in type."""
    if "ok" in reply:
        return decode(reply["ok"])
    kind = getattr(builtins, str(reply.get("exc")), None)
    if not (isinstance(kind, type) and issubclass(kind, Exception)) or issubclass(kind, FLOW_CONTROL):
        kind = RuntimeError
    raise kind(f"candidate raised {reply.get('exc')}: {reply.get('msg')}")


def test_names(test, entry_point):
    """Names the test reads that it does not define: the candidate must supply them."""
    names = {node.id for node in ast.walk(ast.parse(test)) if isinstance(node, ast.Name)}
    if entry_point:
        names.add(entry_point)
    return sorted(name for name in names if not hasattr(builtins, name))


def complete_statements(source):
    """The longest start of ``source`` that parses, cut where a line begins at column 0: a prompt may end inside the
    function its completion finishes."""
    lines = source.splitlines(keepends=True)
    cuts = [len(lines)] + [i for i in range(len(lines) - 1, 0, -1) if lines[i][:1] not in " \t\r\n#)]}"]
    for cut in cuts:
        try:
            return ast.parse("".join(lines[:cut]))
        except SyntaxError:
            continue
    return ast.parse("")


def is_stub(node):
    """A function whose body is only a docstring, ``pass`` or ``...``: the prompt leaves it for the candidate."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return all(
        isinstance(s, ast.Pass) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in node.body
    )


def bind_prompt(prompt, entry_point):
    """The prompt's own definitions, run here in the judge, for the test to use: a helper the test calls (HumanEval's
    ``encode_cyclic``, ``poly``) is the reference's, whatever the candidate redefined. Stubs and the entry point are
    left to the candidate."""
    tree = complete_statements(prompt)
    scope = {"__name__": "__prompt__", "__builtins__": builtins}
    exec(compile(tree, "<prompt>", "exec"), scope)
    stubs = {entry_point} | {node.name for node in tree.body if is_stub(node)}
    return {name: value for name, value in scope.items() if name[:2] != "__" and name not in stubs}


def defines_check(test):
    return any(isinstance(node, ast.FunctionDef) and node.name == "check" for node in ast.parse(test).body)


def run_judge(job, channel):
    """Run the reference test against proxies of the candidate; return ``None`` on success or the failure."""
    ready = receive(channel.replies)
    if "load_error" in ready:
        return "program failed to load: " + str(ready["load_error"])
    entry_point = job.get("entry_point")
    if not entry_point and defines_check(job["test"]):
        return "the reference's test defines check(candidate) but names no entry_point to call it with"
    scope = {"__name__": "__test__", "__builtins__": builtins}
    scope.update(bind_prompt(job.get("prompt") or "", entry_point))
    wanted = test_names(job["test"], entry_point)  # never a builtin: the test's own len() stays its own
    for name, is_callable in ready["ready"].items():
        if name not in wanted or name in scope:
            continue
        if is_callable is True:
            scope[name] = Candidate(name, channel)
            continue
        send(channel.requests, {"get": name})
        reply = receive(channel.replies)
        if "ok" in reply:  # a value that cannot cross (a module) stays undefined, as if the program had none
            scope[name] = decode(reply["ok"])
    exec(compile(job["test"], "<test>", "exec"), scope)
    if entry_point:
        if entry_point not in scope or not isinstance(scope[entry_point], Candidate):
            return f"entry point {entry_point!r} is not a function of the program"
        if callable(scope.get("check")):
            scope["check"](scope[entry_point])
    if channel.calls == 0:  # an empty or misread test: a pass would mean nothing
        return "the test never called the program"
    return None


def set_limits(limits):
    """Hard resource limits for the judge and (inherited) the candidate; soft == hard so they cannot be raised."""
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def libc_call(name, *args):
    """Call a C library function through ctypes; raise OSError when it fails."""
    import ctypes

    if getattr(ctypes.CDLL(None, use_errno=True), name)(*args) != 0:
        raise OSError(ctypes.get_errno(), f"{name}{args[:2]} failed")


def make_undumpable():
    libc_call("prctl", 4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def enter_sandbox(tmpfs_options):
    """Mount the private ``/tmp`` (bwrap's own tmpfs caps its size but not its inodes, nor the extended attributes
    charged to them), then drop every capability, the bounding set included, before any candidate code exists."""
    import ctypes

    libc_call("mount", b"tmpfs", b"/tmp", b"tmpfs", 2 | 4, tmpfs_options.encode())  # MS_NOSUID | MS_NODEV
    os.chdir("/tmp")
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last = int(handle.read())
    for capability in range(last + 1):
        libc_call("prctl", 24, capability, 0, 0, 0)  # PR_CAPBSET_DROP
    libc_call("prctl", 47, 4, 0, 0, 0)  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    libc_call("capset", header, (ctypes.c_uint32 * 6)())  # effective, permitted, inheritable: none
    with open("/proc/self/status") as handle:
        status = dict(line.split(":\t", 1) for line in handle.read().splitlines() if ":\t" in line)
    held = {name: status[name].strip() for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
    if any(int(value, 16) for value in held.values()):
        raise OSError(f"capabilities still held after dropping them: {held}")


def close_except(keep):
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        if int(fd) > 2 and int(fd) not in keep:
            try:
                os.close(int(fd))
            except OSError:
                pass


def read_exact(fd, size):
    """``size`` bytes of ``fd``, read without buffering: nothing past them enters this process."""
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the job ended early")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_rest(fd):
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def start_candidate(verdict_fd, program):
    """Fork the candidate before the test is read; return its pid and the judge's :class:`Channel` to it."""
    to_candidate_r, to_candidate_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)  # the test is still in the stdin pipe: the candidate must never read it
        os.close(verdict_fd)
        close_except({to_candidate_r, to_judge_w})
        try:
            serve_candidate(program, os.fdopen(to_candidate_r, "rb"), os.fdopen(to_judge_w, "wb"))
        finally:
            os._exit(0)
    os.close(to_candidate_r)
    os.close(to_judge_w)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # as PID 1, reap orphaned daemons so they hold no process slot
    return pid, Channel(os.fdopen(to_candidate_w, "wb"), os.fdopen(to_judge_r, "rb"))


def describe(err):
    """``Type: message``; the message alone may fail to print (an int over 4,300 digits), the type cannot."""
    try:
        return f"{type(err).__name__}: {err}"
    except Exception:  # noqa: BLE001
        return f"{type(err).__name__} (its message could not be printed)"


def main():
    if len(sys.argv) > 2:  # in bubblewrap, with the two capabilities it granted for this
        enter_sandbox(sys.argv[2])
    if sys.argv[1] == "probe":
        os._exit(0)
    verdict_fd = int(sys.argv[1])
    head = json.loads(read_exact(0, int(read_exact(0, HEADER_DIGITS))))
    set_limits(head.get("limits", {}))
    make_undumpable()
    pid, channel = start_candidate(verdict_fd, head.pop("program"))
    try:
        job = json.loads(read_rest(0))
        failure = run_judge(job, channel)
    except BaseException as err:  # noqa: BLE001 - any failure of the test is a failed verdict
        failure = describe(err)
        traceback.print_exc(limit=5)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    os.write(verdict_fd, b"PASS\n" if failure is None else ("FAIL " + failure[:4000] + "\n").encode())
    os.close(verdict_fd)
    os._exit(0)  # as PID 1, exiting takes every remaining process of the sandbox with it


if __name__ == "__main__":
    main()
