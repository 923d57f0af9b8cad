"""Verifiers that judge a batch in a pool of workers: the shared argument checks and the pool's lifecycle.

``math`` (a :class:`~caopd_pl.verifiers.deadline_pool.DeadlinePool` of processes) and ``code`` (threads that drive
sandboxes) both take a per-item ``timeout`` and a number of ``workers``, start their pool on the first batch (a
verifier is built long before it judges, and a copy of it, pickled into a DataLoader worker, must not share
processes or threads), and stop it in :meth:`close`, which a later batch undoes by starting a fresh one.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from caopd_pl.verifiers.base import Verdict, Verifier, check_batch


class Pool(Protocol):
    """What a pooled verifier needs of its pool: a way to stop it."""

    def close(self) -> None: ...


class PooledVerifier(Verifier):
    """A verifier whose batches run in a pool started on first use and stopped by :meth:`close`.

    Subclasses implement :meth:`_start_pool` and :meth:`_judge` (the batch, already checked), and ``verify``.
    """

    def __init__(self, timeout: float, workers: int | None) -> None:
        """Check the arguments shared by pooled verifiers; the pool itself starts on the first batch.

        Args:
            timeout: Hard deadline in seconds for one item.
            workers: Items judged at once; default: the number of CPUs.

        Raises:
            ValueError: a non-positive ``timeout`` or ``workers`` (the message names the verifier).
        """
        label = f"{type(self).name or type(self).__name__} verifier"
        if timeout <= 0:
            raise ValueError(f"{label}: timeout must be > 0 seconds, got {timeout}")
        if workers is not None and workers < 1:
            raise ValueError(f"{label}: workers must be >= 1, got {workers}")
        self.timeout = timeout
        self.workers = workers or os.cpu_count() or 1
        self._pool: Any = None

    @abstractmethod
    def _start_pool(self) -> Pool:
        """A new pool of ``self.workers`` workers."""

    @abstractmethod
    def _judge(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        """The verdicts of a batch of equal-length ``completions`` and ``references``, using :meth:`_workers`."""

    def verify_batch(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        check_batch(completions, references)
        return self._judge(completions, references)

    def _workers(self) -> Any:
        """The pool, started now if it is not running."""
        if self._pool is None:
            self._pool = self._start_pool()
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # pools hold processes/threads: a copy starts its own
