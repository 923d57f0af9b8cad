"""Classes that register themselves by name when defined: divergences (:mod:`caopd_pl.losses`) and rewards
(:mod:`caopd_pl.rewards`). A config names one by its ``name``; defining a subclass is all a new one takes."""

from __future__ import annotations

from typing import Any


def register_by_name(cls: type, registry: dict[str, Any], kind: str) -> None:
    """Put ``cls`` into ``registry`` under its own class attribute ``name`` (not an inherited one).

    The same class defined again (a reloaded module) replaces itself; another class may not take a name.

    Raises:
        TypeError: ``cls`` sets no ``name``, or another class holds it.
    """
    name = cls.__dict__.get("name")  # its own, not inherited: two classes never share a name
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} must set a class attribute name = '...' to define a {kind}")
    taken = registry.get(name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        raise TypeError(f"{kind.lower()} name {name!r} of {cls.__qualname__} is taken by {taken.__qualname__}")
    registry[name] = cls


def registered(registry: dict[str, Any], name: str, key: str, kind: str) -> Any:
    """The class registered under ``name``.

    Raises:
        ValueError: none is, naming the config ``key`` and the registered names.
    """
    cls = registry.get(name)
    if cls is None:
        raise ValueError(
            f"{key}={name!r} is not a registered {kind.lower()}; choose one of {list(registry)} or define a {kind} "
            "subclass"
        )
    return cls
