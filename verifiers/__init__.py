"""Verifiers: pluggable judges of completions (installed as ``caopd_pl.verifiers``).

Public API: :class:`Verifier`, :class:`Verdict`, :func:`register`, :func:`build`, :func:`available`.
"""

from caopd_pl.verifiers.base import Verdict, Verifier, safe_verify
from caopd_pl.verifiers.registry import available, build, register

__all__ = ["Verdict", "Verifier", "available", "build", "register", "safe_verify"]
