"""A process pool with a hard per-item deadline: a worker stuck on one item is killed and replaced.

``concurrent.futures.ProcessPoolExecutor`` cannot cancel a running item, and ``signal.alarm`` (math-verify's own
timeout) only works in a main thread and not inside C code such as a huge integer power. Here each worker owns a
pipe; items go out in small chunks and come back one by one, so the driver knows which item a worker is on and since
when. When that item passes its deadline, the worker is SIGKILLed, the item is reported as timed out, the rest of its
chunk is requeued, and a fresh worker starts (workers use the ``spawn`` start method: safe beside CUDA and threads).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

Status = Literal["ok", "error", "timeout"]
STARTUP_TIMEOUT = 120.0
"""Seconds a new worker may spend in its initializer (imports) before the pool gives up."""


@dataclass
class _Worker:
    process: Any
    conn: Connection
    in_flight: deque = field(default_factory=deque)
    started: float = 0.0
    ready: bool = False
    """The initializer has finished; only ready workers get items (start-up is not charged to an item)."""


def _serve(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
    if initializer is not None:
        initializer()
    conn.send("ready")
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for index, item in chunk:
            try:
                conn.send((index, "ok", fn(item)))
            except Exception as err:  # noqa: BLE001 - reported per item, the worker carries on
                conn.send((index, "error", f"{type(err).__name__}: {err}"))


class DeadlinePool:
    """Maps a picklable function over items in worker processes, each item bounded by ``timeout`` seconds."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        workers: int,
        timeout: float,
        initializer: Callable[[], None] | None = None,
        chunk_size: int = 16,
    ) -> None:
        """Describe the pool; workers start on the first :meth:`map`.

        Args:
            fn: A module-level function (picklable by reference) applied to each item.
            workers: Number of worker processes.
            timeout: Seconds one item may take before its worker is killed.
            initializer: Run once in each new worker (imports, resource limits).
            chunk_size: Largest number of items sent to a worker at once.
        """
        if workers < 1 or timeout <= 0 or chunk_size < 1:
            raise ValueError(f"DeadlinePool needs workers >= 1, timeout > 0, chunk_size >= 1; got {workers}, {timeout}")
        self.fn, self.workers, self.timeout = fn, workers, timeout
        self.initializer, self.chunk_size = initializer, chunk_size
        self._context = mp.get_context("spawn")
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0
        """Items killed at the deadline since the pool was created."""

    def map(self, items: Sequence[Any]) -> list[tuple[Status, Any]]:
        """``(status, value)`` per item, in order: ``("ok", fn(item))``, ``("error", message)`` or
        ``("timeout", message)``."""
        with self._lock:
            while len(self._pool) < self.workers:
                self._pool.append(self._start())
            return _Run(self, items).results

    def close(self) -> None:
        """Stop the workers (they are restarted by a later :meth:`map`)."""
        with self._lock:
            for worker in self._pool:
                _stop(worker)
            self._pool = []

    def _start(self) -> _Worker:
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, self.fn, self.initializer), daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent, started=time.monotonic())

    def _replace(self, worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        self._pool[self._pool.index(worker)] = self._start()


class _Run:
    """One :meth:`DeadlinePool.map` call: dispatch, collect, enforce deadlines."""

    def __init__(self, pool: DeadlinePool, items: Sequence[Any]) -> None:
        self.pool = pool
        self.results: list[Any] = [None] * len(items)
        self.pending = deque(enumerate(items))
        self.left = len(items)
        self.restarts = 0  # workers started again after a kill while starting
        chunk = -(-len(items) // (pool.workers * 4)) if items else 1
        self.chunk = max(1, min(pool.chunk_size, chunk))
        while self.left:
            self._dispatch()
            self._collect()

    def _dispatch(self) -> None:
        for worker in self.pool._pool:
            if worker.ready and not worker.in_flight and self.pending:
                chunk = [self.pending.popleft() for _ in range(min(self.chunk, len(self.pending)))]
                try:
                    worker.conn.send(chunk)
                except (OSError, ValueError):  # it died while idle (killed from outside): nothing of it ran
                    self.pending.extendleft(reversed(chunk))
                    self.pool._replace(worker)
                    continue
                worker.in_flight.extend(chunk)
                worker.started = time.monotonic()

    def _collect(self) -> None:
        starting = [worker for worker in self.pool._pool if not worker.ready]
        busy = [worker for worker in self.pool._pool if worker.in_flight]
        deadlines = [worker.started + self.pool.timeout for worker in busy]
        deadlines += [worker.started + STARTUP_TIMEOUT for worker in starting]
        ready = wait([worker.conn for worker in starting + busy], timeout=max(0.0, min(deadlines) - time.monotonic()))
        for worker in starting:
            self._await_start(worker, worker.conn in ready)
        for worker in busy:
            if worker.conn in ready:
                self._receive(worker)
            elif time.monotonic() >= worker.started + self.pool.timeout:
                self._fail_head(worker, "timeout", f"timeout: no result within {self.pool.timeout:g} s")

    def _await_start(self, worker: _Worker, has_message: bool) -> None:
        if has_message:
            try:
                worker.ready = worker.conn.recv() == "ready"
            except (EOFError, OSError):
                worker.process.join(timeout=2)  # the pipe closes before the process is reaped
                code = worker.process.exitcode
                # Killed by a signal from outside before it said ready (as an idle one may be): start another, a
                # bounded number of times; one that failed on its own (an exit code) would fail again.
                if code is not None and code < 0 and self.restarts < 2 * self.pool.workers:
                    self.restarts += 1
                    self.pool._replace(worker)
                    return
                raise RuntimeError(f"a verifier worker died while starting (exit code {code})")
        elif time.monotonic() > worker.started + STARTUP_TIMEOUT:
            raise RuntimeError(f"a verifier worker did not start within {STARTUP_TIMEOUT} s")

    def _receive(self, worker: _Worker) -> None:
        try:
            index, status, value = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=2)  # the pipe closes before the process is reaped
            code = worker.process.exitcode
            self._fail_head(worker, "error", f"verifier worker died (exit code {code})")
            return
        while worker.in_flight and worker.in_flight[0][0] != index:  # defensive: results arrive in order
            worker.in_flight.popleft()
        worker.in_flight.popleft()
        worker.started = time.monotonic()
        self.results[index] = (status, value)
        self.left -= 1

    def _fail_head(self, worker: _Worker, status: Status, message: str) -> None:
        index, _ = worker.in_flight.popleft()
        self.results[index] = (status, message)
        self.left -= 1
        self.pool.timeouts += status == "timeout"
        self.pending.extendleft(reversed(worker.in_flight))
        worker.in_flight.clear()
        self.pool._replace(worker)


def _stop(worker: _Worker) -> None:
    try:
        worker.conn.send(None)
    except (OSError, ValueError):
        pass
    worker.process.join(timeout=2)
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5)
    worker.conn.close()
