"""The program that runs *inside* the code sandbox: it keeps the test harness and the untrusted candidate apart.

Standalone and stdlib-only: the sandbox runs it as ``python -I -S -c <this source> VERDICT_FD``. Two processes:

- the **judge** (this process) reads the job (program, test, entry point, limits) from stdin, sets hard resource
  limits, makes itself non-dumpable (so a same-uid process can neither ptrace it nor open ``/proc/<judge>/mem`` or
  ``/proc/<judge>/fd``), then forks
- the **candidate**, which closes the verdict descriptor and every judge-side descriptor *before* it executes the
  untrusted program, then serves calls: ``name(*args, **kwargs)`` requests arrive as JSON, results go back as JSON.

The judge runs the reference test with each candidate function replaced by a proxy. Values crossing the boundary
are decoded by the judge into plain built-in objects (``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``,
``bytes``, ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``), so an object whose ``__eq__`` always returns True,
a program that walks the stack to rewrite the result, ``sys.exit(0)`` before the tests, or a printed "passed" cannot
make the judge write ``PASS``; only the judge holds the verdict descriptor, and the host reads nothing else.
Candidates must therefore be functions taking and returning plain data (HumanEval / MBPP style).
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
        return int(obj)
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
def serve_candidate(program, names, requests, replies):
    """Run the untrusted program, describe the requested names, then answer calls until the judge hangs up."""
    scope = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(program, "<candidate>", "exec"), scope)
    except BaseException as err:  # noqa: BLE001 - SystemExit included: exiting early is a failure, not a pass
        send(replies, {"load_error": f"{type(err).__name__}: {err}"})
        return
    found = {}
    for name in names:
        if name in scope:
            try:
                found[name] = {"callable": True} if callable(scope[name]) else {"value": encode(scope[name])}
            except TypeError:
                continue
    send(replies, {"ready": found})
    while True:
        request = receive(requests)
        try:
            result = scope[request["call"]](*decode(request["args"]), **decode(request["kwargs"]))
            reply = {"ok": encode(result)}
        except BaseException as err:  # noqa: BLE001 - the judge decides what a failure means
            reply = {"exc": type(err).__name__, "msg": str(err)[:2000]}
        send(replies, reply)


# ---------------------------------------------------------------------------------------------- judge side
class Candidate:
    """A proxy for one function of the candidate program."""

    def __init__(self, name, requests, replies):
        self.name, self.requests, self.replies = name, requests, replies
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        send(self.requests, {"call": self.name, "args": encode(list(args)), "kwargs": encode(kwargs)})
        reply = receive(self.replies)
        if "ok" in reply:
            return decode(reply["ok"])
        kind = getattr(builtins, str(reply.get("exc")), None)
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = RuntimeError
        raise kind(f"candidate raised {reply.get('exc')}: {reply.get('msg')}")


def test_names(test, entry_point):
    """Names the test reads that it does not define: the candidate must supply them."""
    names = {node.id for node in ast.walk(ast.parse(test)) if isinstance(node, ast.Name)}
    if entry_point:
        names.add(entry_point)
    return sorted(name for name in names if not hasattr(builtins, name))


def run_judge(job, requests, replies):
    """Run the reference test against proxies of the candidate; return ``None`` on success or the failure."""
    ready = receive(replies)
    if "load_error" in ready:
        return "program failed to load: " + str(ready["load_error"])
    scope = {"__name__": "__test__", "__builtins__": builtins}
    for name, info in ready["ready"].items():
        scope[name] = Candidate(name, requests, replies) if info.get("callable") else decode(info.get("value"))
    exec(compile(job["test"], "<test>", "exec"), scope)
    entry_point = job.get("entry_point")
    if entry_point:
        if entry_point not in scope or not isinstance(scope[entry_point], Candidate):
            return f"entry point {entry_point!r} is not a function of the program"
        if callable(scope.get("check")):
            scope["check"](scope[entry_point])
    return None


def set_limits(limits):
    """Hard resource limits for the judge and (inherited) the candidate; soft == hard so they cannot be raised."""
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def make_undumpable():
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def close_except(keep):
    for fd in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        if int(fd) > 2 and int(fd) not in keep:
            try:
                os.close(int(fd))
            except OSError:
                pass


def main():
    verdict_fd = int(sys.argv[1])
    job = json.loads(sys.stdin.buffer.read())
    set_limits(job.get("limits", {}))
    make_undumpable()
    names = test_names(job["test"], job.get("entry_point"))
    to_candidate_r, to_candidate_w = os.pipe()
    to_judge_r, to_judge_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(verdict_fd)
        close_except({to_candidate_r, to_judge_w})
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        try:
            serve_candidate(job["program"], names, os.fdopen(to_candidate_r, "rb"), os.fdopen(to_judge_w, "wb"))
        finally:
            os._exit(0)
    os.close(to_candidate_r)
    os.close(to_judge_w)
    try:
        failure = run_judge(job, os.fdopen(to_candidate_w, "wb"), os.fdopen(to_judge_r, "rb"))
    except BaseException as err:  # noqa: BLE001 - any failure of the test is a failed verdict
        failure = f"{type(err).__name__}: {err}"
        traceback.print_exc(limit=5)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    os.write(verdict_fd, b"PASS\n" if failure is None else ("FAIL " + failure[:4000] + "\n").encode())
    os.close(verdict_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
