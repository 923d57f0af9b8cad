"""Verifiers: pluggable judges of completions (installed as ``caopd_pl.verifiers``).

Public API: :class:`Verifier`, :class:`Verdict` (and its :data:`VerdictStatus`), :class:`PooledVerifier` (a base for
verifiers that judge in a pool of workers), :func:`register`, :func:`build`, :func:`available`.
"""

from caopd_pl.verifiers.base import Verdict, VerdictStatus, Verifier, safe_verify
from caopd_pl.verifiers.pooled import PooledVerifier
from caopd_pl.verifiers.registry import available, build, register

__all__ = ["PooledVerifier", "Verdict", "VerdictStatus", "Verifier", "available", "build", "register", "safe_verify"]
