"""One registry mechanism for every component a config names: divergences, rewards, rollout engines, verifiers, tasks.

A :class:`Registry` holds the subclasses of one base class by short name. A config (or Python code) names one by
any of four specs, and :meth:`Registry.build` turns each into an object:

  * a short name, ``forward``: a subclass that sets its own class attribute ``name`` is registered when it is
    defined, once the module defining it is imported (the built-ins' modules are imported on the first lookup);
  * an entry-point name of the registry's group, for installed plugins
    (``[project.entry-points."caopd_pl.verifiers"] yesno = "my_pkg.verify:YesNoVerifier"``);
  * a dotted class path, ``my_pkg.losses.SkewedKL``: any subclass, registered or not, from any importable module;
  * a mapping ``{class_path: <any of the above>, init_args: {...}}``, the form jsonargparse writes.

A subclass defined in a user's own file therefore needs no edit to the project: its class path is enough. Pure
Python: no torch, no Lightning.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")

BUILT_IN = "built-in"


class Registry(Mapping[str, type[T]], Generic[T]):
    """The registered subclasses of ``base`` by name (a read-only mapping), and the builder of specs naming them.

    Args:
        base: the class every entry subclasses.
        key: the config key that names one, for error messages (``model.loss.divergence``).
        kind: what an entry is, in words (``divergence``, ``rollout engine``).
        modules: modules whose import registers the built-ins; imported on the first lookup, not before (they may
            import the module that defines the registry).
        group: the entry-point group of installed plugins; None: no entry points.
        reserved: names no class may take (a value the config key gives another meaning, such as ``auto``).
    """

    def __init__(
        self,
        base: type[T],
        key: str,
        kind: str,
        modules: tuple[str, ...] = (),
        group: str | None = None,
        reserved: tuple[str, ...] = (),
    ) -> None:
        self.base, self.key, self.kind = base, key, kind
        self.modules, self.group, self.reserved = modules, group, reserved
        self._classes: dict[str, type[T]] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False

    # ---- the mapping: name -> class ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> type[T]:
        self._load_builtins()
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        self._load_builtins()
        return iter(list(self._classes))

    def __len__(self) -> int:
        self._load_builtins()
        return len(self._classes)

    # ---- registering --------------------------------------------------------------------------------------------

    def add(self, cls: type[T], name: str | None = None, origin: str = BUILT_IN) -> type[T]:
        """Register ``cls`` under ``name`` (default: its own class attribute ``name``); returns ``cls``.

        The same class defined again (a reloaded module) replaces itself; another class may not take a name.

        Raises:
            TypeError: ``cls`` is not a subclass of the base, has no name, a reserved one, or one another class holds.
        """
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"a {self.kind} must be a {self.base.__name__} subclass, got {cls!r}")
        name = cls.__dict__.get("name") if name is None else name
        if not isinstance(name, str) or not name or name in self.reserved:
            reserved = f" other than {list(self.reserved)}" if self.reserved else ""
            raise TypeError(
                f"{cls.__qualname__}: a {self.kind}'s name must be a non-empty string{reserved}, got {name!r}"
            )
        taken = self._classes.get(name)
        if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"{self.kind} name {name!r} of {cls.__qualname__} is taken by {taken.__qualname__}")
        self._classes[name], self._origins[name] = cls, origin
        return cls

    def add_own_name(self, cls: type[T]) -> None:
        """Register ``cls`` under its own class attribute ``name``, if it sets one (``__init_subclass__`` calls it).

        A subclass without a name of its own (inheriting one, or none) is not registered: a class path names it.
        """
        if "name" in cls.__dict__ and not isinstance(cls.__dict__["name"], property):
            self.add(cls)

    def remove(self, name: str) -> None:
        """Forget ``name`` (a test's own class, once the test is done)."""
        self._classes.pop(name, None)
        self._origins.pop(name, None)

    # ---- looking up ---------------------------------------------------------------------------------------------

    def available(self) -> dict[str, str]:
        """Name -> where it comes from (``built-in``, an entry point), for every registered and installed entry."""
        self._load_builtins()
        self._load_entry_points()
        return {name: self._origins[name] for name in sorted(self._classes)}

    def resolve(self, spec: str) -> type[T]:
        """The class ``spec`` names: a registered name, an entry point, or a dotted class path.

        Raises:
            ValueError: nothing by that name (one line: the key, the value, the names it can take, the closest one),
                or the class path is not importable or not a subclass of the base.
        """
        self._load_builtins()
        if spec not in self._classes and self.group is not None:
            self._load_entry_points()
        if spec in self._classes:
            return self._classes[spec]
        if "." in spec:
            return self._import(spec)
        choices = [*self._classes, *self.reserved]
        close = difflib.get_close_matches(spec, choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{self.key}={spec!r} is not a registered {self.kind}; choose one of {choices} or define a "
            f"{self.base.__name__} subclass (its class path names it){hint}"
        )

    def build(self, spec: T | str | Mapping[str, Any], **kwargs: Any) -> T:
        """The object ``spec`` describes: an instance (returned as it is), a name or class path built with
        ``kwargs``, or a ``{class_path, init_args}`` mapping (``kwargs`` added to its ``init_args``).

        Raises:
            ValueError: an unknown name or class path, a mapping without ``class_path`` or with other keys, or
                arguments the class does not take (one line naming the key).
        """
        if isinstance(spec, self.base):
            return spec
        if isinstance(spec, Mapping):
            class_path, init_args = _class_path_and_init_args(spec, self.key)
            return self.build(class_path, **{**init_args, **kwargs})
        if not isinstance(spec, str):
            raise ValueError(f"{self.key} must be a name, a class path or {{class_path, init_args}}, got {spec!r}")
        cls = self.resolve(spec)
        try:
            return cls(**kwargs)
        except TypeError as err:  # an argument the constructor does not take, or a required one missing
            raise ValueError(f"{self.key}={spec!r}: {err}") from err

    # ---- loading ------------------------------------------------------------------------------------------------

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a built-in module may look names up while it is imported
            for module in self.modules:
                importlib.import_module(module)

    def _load_entry_points(self) -> None:
        if self.group is None:
            return
        for point in entry_points(group=self.group):
            if point.name not in self._classes:
                origin = f"entry point {point.value} ({point.dist.name if point.dist else 'unknown'})"
                self.add(point.load(), point.name, origin)

    def _import(self, class_path: str) -> type[T]:
        module_name, _, attr = class_path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{self.key}={class_path!r}: cannot import it ({type(err).__name__}: {err})") from err
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(f"{self.key}={class_path!r} is not a {self.base.__name__} subclass")
        return cls


def _class_path_and_init_args(spec: Mapping[str, Any], key: str) -> tuple[str, dict[str, Any]]:
    """The ``class_path`` and ``init_args`` of a mapping spec.

    Raises:
        ValueError: no ``class_path``, a key besides the two, or ``init_args`` that is not a mapping.
    """
    other = sorted(set(spec) - {"class_path", "init_args"})
    if "class_path" not in spec or other:
        raise ValueError(f"{key} as a mapping takes class_path and optionally init_args, got keys {sorted(spec)}")
    init_args = spec.get("init_args") or {}
    if not isinstance(init_args, Mapping):
        raise ValueError(f"{key}.init_args must be a mapping, got {init_args!r}")
    return spec["class_path"], dict(init_args)
