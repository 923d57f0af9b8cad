"""What a task is: prompts as chat messages, a reference answer per prompt, an optional demonstration, a verifier.

A task serves named splits (``train``, ``val``, ``test``, and optionally ``ood``). The student's prompt is the
task's messages with the confidence instruction appended to the last user message; the teacher's privileged
prompt is built from the same messages by :mod:`caopd_pl.templates`.

A new task is one class: a :class:`GeneratedTask` (examples made in code: implement ``generate``) or a
:class:`~caopd_pl.tasks.sources.FileTask` (rows from files: implement ``example``, one row to one example); a config
names it by class path (``data.task.class_path: my_pkg.tasks.MyTask``). :data:`TASKS` builds one from a class path,
``{class_path, init_args}`` or an installed entry point (group ``caopd_pl.tasks``), as the other registries do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from caopd_pl.confidence import with_instruction
from caopd_pl.registry import Registry
from caopd_pl.verifiers import Verifier, build

Message = dict[str, str]


@dataclass
class TaskExample:
    """One prompt of a task."""

    messages: list[Message]
    """The chat messages of the plain prompt, without the confidence instruction."""
    reference: Any
    """What the verifier compares against (an integer, a letter, a golden tool call, tests, ...)."""
    demonstration: str | None = None
    """A golden response (without a confidence line) used by the teacher's ``demo`` template."""
    id: str = ""
    """A stable identifier, for logs and for keeping a prompt's rollouts together."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else (difficulty, source row), passed through to outputs."""

    def student_messages(self) -> list[Message]:
        """The plain prompt the student sees: the last user message gets the confidence instruction."""
        index = last_user_index(self.messages)
        edited = dict(self.messages[index], content=with_instruction(self.messages[index]["content"]))
        return [*self.messages[:index], edited, *self.messages[index + 1 :]]


def last_user_index(messages: list[Message]) -> int:
    """Index of the last ``user`` message; the question lives there."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index
    raise ValueError(f"a prompt needs a user message, got roles {[m.get('role') for m in messages]}")


class Task(ABC):
    """Base class of tasks. Subclasses implement :meth:`split` and set a verifier."""

    def __init__(self, verifier: str | Verifier | dict[str, Any]) -> None:
        self.verifier = build(verifier)

    @property
    def name(self) -> str:
        return type(self).__name__

    @abstractmethod
    def split(self, name: str) -> list[TaskExample]:
        """The examples of split ``name``; raises ``ValueError`` naming the available splits otherwise."""

    def splits(self) -> tuple[str, ...]:
        """The split names this task can serve."""
        return ("train", "val", "test")


TASKS: Registry[Task] = Registry(Task, "data.task", "task", group="caopd_pl.tasks")
"""Tasks named by entry point (group ``caopd_pl.tasks``); :meth:`~caopd_pl.registry.Registry.build` also takes class
paths and ``{class_path, init_args}``, the form ``data.task`` and the continual runner's stages use."""


class GeneratedTask(Task):
    """A task whose splits are generated in code, all of them at once (one random stream), on first use.

    Subclasses implement :meth:`generate`; :meth:`split` checks the name and serves the generated lists.
    """

    def __init__(self, verifier: str | Verifier | dict[str, Any]) -> None:
        super().__init__(verifier)
        self._generated: dict[str, list[TaskExample]] | None = None

    @abstractmethod
    def generate(self) -> dict[str, list[TaskExample]]:
        """Every split's examples, by split name (called once)."""

    def split(self, name: str) -> list[TaskExample]:
        if name not in self.splits():
            raise ValueError(f"{type(self).__name__} has splits {self.splits()}, not {name!r}")
        if self._generated is None:
            self._generated = self.generate()
        return self._generated[name]
