"""Verdict statuses: correct / wrong decided by the verifier, timeout / error when it could not decide."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import pytest

from caopd_pl.verifiers import Verdict, Verifier
from caopd_pl.verifiers.pooled import PooledVerifier


def test_status_follows_correct_unless_given():
    assert Verdict(True, "answer=3").status == "correct"
    assert Verdict(False, "answer=4").status == "wrong"
    assert Verdict.timeout("no result within 5 s") == Verdict(False, "no result within 5 s", "timeout")
    assert Verdict.error("error: ValueError: bad reference").status == "error"
    assert [v.failed for v in (Verdict(True), Verdict(False), Verdict.timeout(""), Verdict.error(""))] == [
        False,
        False,
        True,
        True,
    ]


def test_status_is_read_from_the_status_not_the_detail():
    # The detail is free text: a wrong answer that happens to read "error: ..." is still a decided wrong answer.
    assert not Verdict(False, "error: the program printed this").failed
    assert Verdict.timeout("failed: time limit (10 s) exceeded").failed


@pytest.mark.parametrize(("correct", "status"), [(True, "wrong"), (False, "correct"), (True, "timeout")])
def test_a_status_that_contradicts_correct_is_refused(correct, status):
    with pytest.raises(ValueError, match="cannot have status"):
        Verdict(correct, "", status)


def test_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        Verdict(False, "", "maybe")  # type: ignore[arg-type]


class CountingPool:
    """A pool that only records that it was started and stopped."""

    started = 0

    def __init__(self) -> None:
        CountingPool.started += 1
        self.closed = False

    def close(self) -> None:
        self.closed = True


class EchoVerifier(PooledVerifier):
    """Correct when the completion equals the reference; judges through its (recording) pool."""

    def verify(self, completion: str, reference: Any) -> Verdict:
        return self.verify_batch([completion], [reference])[0]

    def _start_pool(self) -> CountingPool:
        return CountingPool()

    def _judge(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        self._workers()
        return [Verdict(c == r) for c, r in zip(completions, references)]


def test_pooled_verifier_checks_arguments_and_owns_its_pool_lifecycle():
    with pytest.raises(ValueError, match="EchoVerifier verifier: timeout must be > 0 seconds, got 0"):
        EchoVerifier(timeout=0, workers=None)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        EchoVerifier(timeout=1, workers=0)
    with pytest.raises(ValueError, match="1 completions but 2 references"):
        EchoVerifier(timeout=1, workers=1).verify_batch(["a"], ["a", "b"])
    CountingPool.started = 0
    with EchoVerifier(timeout=1, workers=2) as verifier:
        assert verifier._pool is None  # nothing starts before the first batch
        assert [v.correct for v in verifier.verify_batch(["a", "b"], ["a", "c"])] == [True, False]
        pool = verifier._pool
        assert verifier.verify("x", "x").correct and verifier._pool is pool  # one pool for every batch
        assert pickle.loads(pickle.dumps(verifier))._pool is None  # a copy starts its own
    assert pool.closed and verifier._pool is None  # the with block closed it
    assert verifier.verify("y", "y").correct and CountingPool.started == 2  # a later batch starts a fresh one


def test_every_verifier_is_a_context_manager():
    class Yes(Verifier):
        closed = False

        def verify(self, completion: str, reference: Any) -> Verdict:
            return Verdict(True)

        def close(self) -> None:
            self.closed = True

    with Yes() as verifier:
        assert verifier.verify("", None).correct
    assert verifier.closed
