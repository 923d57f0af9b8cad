"""One registry of verifiers by name: built-ins, ``class_path`` in YAML, and entry-point plugins.

Third-party packages register a verifier class under the entry-point group ``caopd_pl.verifiers``::

    [project.entry-points."caopd_pl.verifiers"]
    my_task = "my_pkg.verify:MyVerifier"
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from caopd_pl.verifiers.base import Verifier

ENTRY_POINT_GROUP = "caopd_pl.verifiers"

_REGISTRY: dict[str, tuple[type[Verifier], str]] = {}


def register(name: str, origin: str = "built-in"):
    """Class decorator that registers a :class:`Verifier` subclass under ``name``."""

    def decorator(cls: type[Verifier]) -> type[Verifier]:
        if not (isinstance(cls, type) and issubclass(cls, Verifier)):
            raise TypeError(f"@register({name!r}) expects a Verifier subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"verifier name {name!r} is already taken by {_REGISTRY[name][0].__qualname__}")
        cls.name = name
        _REGISTRY[name] = (cls, origin)
        return cls

    return decorator


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        cls = ep.load()
        register(ep.name, origin=f"entry point {ep.value} ({ep.dist.name if ep.dist else 'unknown'})")(cls)


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    importlib.import_module("caopd_pl.verifiers.builtin")


def available() -> dict[str, str]:
    """Name -> where it comes from, for every verifier that can be built."""
    _load_builtins()
    _load_entry_points()
    return {name: origin for name, (_, origin) in sorted(_REGISTRY.items())}


def build(spec: str | Verifier | dict[str, Any], **kwargs: Any) -> Verifier:
    """Build a verifier from a registered name, a dotted ``class_path``, a ``{class_path, init_args}`` dict, or an
    instance (returned as is)."""
    if isinstance(spec, Verifier):
        return spec
    if isinstance(spec, dict):
        if "class_path" not in spec:
            raise ValueError(f"a verifier dict needs 'class_path' (and optionally 'init_args'), got keys {list(spec)}")
        return build(spec["class_path"], **{**spec.get("init_args", {}), **kwargs})
    _load_builtins()
    if spec not in _REGISTRY:
        _load_entry_points()
    if spec in _REGISTRY:
        return _REGISTRY[spec][0](**kwargs)
    if "." in spec:
        module_name, _, attr = spec.rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(cls, type) and issubclass(cls, Verifier)):
            raise TypeError(f"verifier class_path {spec!r} is not a Verifier subclass")
        return cls(**kwargs)
    raise ValueError(f"unknown verifier {spec!r}; available: {', '.join(available())} (or give a dotted class_path)")
