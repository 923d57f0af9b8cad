"""The verifiers by name: built-ins, class paths (as YAML gives them), and entry-point plugins.

:data:`~caopd_pl.verifiers.base.VERIFIERS` is a :class:`caopd_pl.registry.Registry`, the mechanism divergences, rewards,
rollout engines and tasks use too. A :class:`~caopd_pl.verifiers.base.Verifier` subclass that sets ``name`` is
registered under it when defined; third-party packages announce theirs under the entry-point group
``caopd_pl.verifiers``::

    [project.entry-points."caopd_pl.verifiers"]
    my_task = "my_pkg.verify:MyVerifier"
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from caopd_pl.registry import BUILT_IN
from caopd_pl.verifiers.base import VERIFIERS, Verifier

ENTRY_POINT_GROUP = VERIFIERS.group


def register(name: str, origin: str = BUILT_IN) -> Callable[[type[Verifier]], type[Verifier]]:
    """Class decorator that registers a :class:`Verifier` subclass under ``name`` (and sets its ``name``)."""

    def decorator(cls: type[Verifier]) -> type[Verifier]:
        VERIFIERS.add(cls, name, origin)
        cls.name = name
        return cls

    return decorator


def available() -> dict[str, str]:
    """Name -> where it comes from, for every verifier that can be built by name."""
    return VERIFIERS.available()


def build(spec: str | Verifier | Mapping[str, Any], **kwargs: Any) -> Verifier:
    """A verifier from a registered name, an entry point, a dotted class path, a ``{class_path, init_args}``
    mapping, or an instance (returned as it is); see :meth:`caopd_pl.registry.Registry.build`."""
    return VERIFIERS.build(spec, **kwargs)
