"""The verifier contract: a completion and a reference in, a verdict out.

A verifier decides whether one completion is correct. CaOPD's empirical confidence is the share of a prompt's
rollouts that the verifier accepts, so a verifier must never crash the run: ``verify_batch`` turns an exception
into ``Verdict.error(...)`` (wrong, with status ``error``). Subclasses implement ``verify`` and may override
``verify_batch`` to run in parallel (:class:`caopd_pl.verifiers.pooled.PooledVerifier` does it with a pool).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

VerdictStatus = Literal["correct", "wrong", "timeout", "error"]
"""``correct`` and ``wrong``: the verifier decided; ``timeout`` and ``error``: it could not (counted wrong)."""
STATUSES: tuple[VerdictStatus, ...] = get_args(VerdictStatus)


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one completion."""

    correct: bool
    """Whether the completion's answer matches the reference."""
    detail: str = ""
    """Why: the extracted answer, or the error or timeout that made it count as wrong."""
    status: VerdictStatus | None = None
    """``correct``, ``wrong``, ``timeout`` or ``error``; None (the default) means ``correct`` or ``wrong`` as
    ``correct`` says. Timeouts and errors are wrong verdicts that tallies count apart."""

    def __post_init__(self) -> None:
        status = self.status or ("correct" if self.correct else "wrong")
        if status not in STATUSES:
            raise ValueError(f"Verdict status must be one of {STATUSES}, got {status!r}")
        if (status == "correct") != bool(self.correct):
            raise ValueError(f"Verdict(correct={self.correct!r}) cannot have status {status!r}")
        object.__setattr__(self, "status", status)  # frozen: set once, here

    @classmethod
    def timeout(cls, detail: str) -> Verdict:
        """A wrong verdict because judging took longer than the verifier's deadline."""
        return cls(False, detail, "timeout")

    @classmethod
    def error(cls, detail: str) -> Verdict:
        """A wrong verdict because the verifier could not judge (it raised, a worker died, a bad reference)."""
        return cls(False, detail, "error")

    @property
    def failed(self) -> bool:
        """True when the verifier itself could not decide (status ``timeout`` or ``error``)."""
        return self.status in ("timeout", "error")


class Verifier(ABC):
    """Base class of all verifiers. Register subclasses with :func:`caopd_pl.verifiers.register`.

    A verifier is a context manager: ``with build("math") as verifier: ...`` closes it on the way out.
    """

    name: ClassVar[str] = ""

    @abstractmethod
    def verify(self, completion: str, reference: Any) -> Verdict:
        """Judge one completion against its reference."""

    def verify_batch(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        """Judge many completions; never raises for a single bad item."""
        check_batch(completions, references)
        return [safe_verify(self, c, r) for c, r in zip(completions, references)]

    def close(self) -> None:
        """Release pools or sandboxes held by the verifier."""

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_batch(completions: Sequence[str], references: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless there is one reference per completion."""
    if len(completions) != len(references):
        raise ValueError(f"got {len(completions)} completions but {len(references)} references")


def safe_verify(verifier: Verifier, completion: str, reference: Any) -> Verdict:
    """Run ``verifier.verify`` and turn any exception into an ``error`` verdict that names it."""
    try:
        verdict = verifier.verify(completion, reference)
    except Exception as err:  # noqa: BLE001 - a verifier bug must cost one verdict, not the run
        return Verdict.error(f"error: {type(err).__name__}: {err}")
    if not isinstance(verdict, Verdict):
        return Verdict.error(f"error: {type(verifier).__name__}.verify returned {type(verdict).__name__}")
    return verdict
