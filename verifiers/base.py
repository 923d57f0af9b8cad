"""The verifier contract: a completion and a reference in, a verdict out.

A verifier decides whether one completion is correct. CaOPD's empirical confidence is the share of a prompt's
rollouts that the verifier accepts, so a verifier must never crash the run: ``verify_batch`` turns an exception
into ``Verdict.error(...)`` (wrong, with status ``error``). Subclasses implement ``verify`` and may override
``verify_batch`` to run in parallel (:class:`caopd_pl.verifiers.pooled.PooledVerifier` does it with a pool).

The base class keeps one promise for every subclass: ``verify`` and ``verify_batch`` see each completion without its
confidence line (:func:`caopd_pl.confidence.strip_confidence`, everything from the first ``Confidence:`` key on), so
a verifier that reads "the last number" never reads the stated confidence as the answer. The base applies it to
the ``verify`` and ``verify_batch`` a subclass defines; the subclass judges the answer text it is given. A verifier
whose answer may itself hold a line that reads like a confidence key (a program's ``confidence: float = 0.5``) sets
``reads_whole_completion = True`` and finds its answer in the whole text (``code`` does).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from caopd_pl.confidence import strip_confidence
from caopd_pl.registry import Registry

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
    """Base class of all verifiers. A subclass that sets ``name`` is registered under it when defined
    (:data:`VERIFIERS`); any subclass is named by its class path.

    A verifier is a context manager: ``with build("math") as verifier: ...`` closes it on the way out.
    """

    name: ClassVar[str] = ""
    reads_whole_completion: ClassVar[bool] = False
    """True: ``verify`` and ``verify_batch`` get the completion with its confidence line."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "verify" in cls.__dict__:
            cls.verify = _on_the_answer(cls.__dict__["verify"])
        if "verify_batch" in cls.__dict__:
            cls.verify_batch = _on_the_answers(cls.__dict__["verify_batch"])
        VERIFIERS.add_own_name(cls)

    @abstractmethod
    def verify(self, completion: str, reference: Any) -> Verdict:
        """Judge one completion against its reference; ``completion`` comes without its confidence line."""

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


VERIFIERS: Registry[Verifier] = Registry(
    Verifier,
    "verifier",
    "verifier",
    modules=tuple(
        f"caopd_pl.verifiers.{module}"
        for module in ("answer_text", "chemistry", "code", "exact", "math", "reasoning_gym", "tooluse")
    ),
    group="caopd_pl.verifiers",
)
"""Every verifier that sets a ``name`` (the built-ins' modules are imported on the first lookup), and every
installed entry point of the ``caopd_pl.verifiers`` group."""


def _without_confidence(verifier: Verifier, completion: Any) -> Any:
    """A completion's text before its confidence line; anything but a string as it is (a verifier reports it)."""
    if verifier.reads_whole_completion or not isinstance(completion, str):
        return completion
    return strip_confidence(completion)


def _on_the_answer(verify: Callable[..., Verdict]) -> Callable[..., Verdict]:
    """``verify``, given the completion without its confidence line (stripping twice changes nothing)."""

    @functools.wraps(verify)
    def verify_answer(self: Verifier, completion: Any, reference: Any) -> Verdict:
        return verify(self, _without_confidence(self, completion), reference)

    return verify_answer


def _on_the_answers(verify_batch: Callable[..., list[Verdict]]) -> Callable[..., list[Verdict]]:
    """``verify_batch``, given the completions without their confidence lines."""

    @functools.wraps(verify_batch)
    def verify_answers(self: Verifier, completions: Sequence[Any], references: Sequence[Any]) -> list[Verdict]:
        return verify_batch(self, [_without_confidence(self, completion) for completion in completions], references)

    return verify_answers


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
