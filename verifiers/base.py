"""The verifier contract: a completion and a reference in, a verdict out.

A verifier decides whether one completion is correct. CaOPD's empirical confidence is the share of a prompt's
rollouts that the verifier accepts, so a verifier must never crash the run: ``verify_batch`` turns an exception
into ``Verdict(correct=False, detail="error: ...")``. Subclasses implement ``verify`` and may override
``verify_batch`` to run in parallel.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one completion."""

    correct: bool
    """Whether the completion's answer matches the reference."""
    detail: str = ""
    """Why: the extracted answer, or the error or timeout that made it count as wrong."""

    @property
    def failed(self) -> bool:
        """True when the verifier itself could not decide (raised or timed out); such verdicts count as wrong."""
        return self.detail.startswith(("error:", "timeout:"))


class Verifier(ABC):
    """Base class of all verifiers. Register subclasses with :func:`caopd_pl.verifiers.register`."""

    name: ClassVar[str] = ""

    @abstractmethod
    def verify(self, completion: str, reference: Any) -> Verdict:
        """Judge one completion against its reference."""

    def verify_batch(self, completions: Sequence[str], references: Sequence[Any]) -> list[Verdict]:
        """Judge many completions; never raises for a single bad item."""
        if len(completions) != len(references):
            raise ValueError(f"got {len(completions)} completions but {len(references)} references")
        return [safe_verify(self, c, r) for c, r in zip(completions, references)]

    def close(self) -> None:
        """Release pools or sandboxes held by the verifier."""


def safe_verify(verifier: Verifier, completion: str, reference: Any) -> Verdict:
    """Run ``verifier.verify`` and turn any exception into a wrong verdict that names it."""
    try:
        verdict = verifier.verify(completion, reference)
    except Exception as err:  # noqa: BLE001 - a verifier bug must cost one verdict, not the run
        return Verdict(False, f"error: {type(err).__name__}: {err}")
    if not isinstance(verdict, Verdict):
        return Verdict(False, f"error: {type(verifier).__name__}.verify returned {type(verdict).__name__}")
    return verdict
