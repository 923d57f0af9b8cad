"""Imports every built-in verifier module so that their ``@register`` decorators run."""

from caopd_pl.verifiers import answer_text, chemistry, code, exact, math, reasoning_gym, tooluse  # noqa: F401
