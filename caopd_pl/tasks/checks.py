"""Checks of a task's data, run before anything trains: each fails in one line naming the setting and the fix.

The datamodule checks that the train rows hold what the teacher template (:func:`check_fit_data`) and stratified
sampling (:func:`check_stratify_key`) need; the module checks that they hold demonstrations for the warm start
(:func:`check_warm_start_data`).
"""

from __future__ import annotations

from caopd_pl.errors import UsageError, one_line
from caopd_pl.tasks.base import Task, TaskExample
from caopd_pl.templates import TeacherConfig


def check_fit_data(task: Task, teacher: TeacherConfig) -> None:
    """Fail at start-up, in one line, when the train rows lack what the teacher template needs of them.

    A row needs a demonstration for ``data.teacher.template: demo``, and for ``correct_solution`` when a prompt with
    no correct rollout falls back to it (``no_correct_rollout: demo``).

    Raises:
        UsageError: no train rows, or missing demonstrations (the message names the key and the fix).
    """
    rows = train_rows(task)
    missing = [example.id for example in rows if example.demonstration is None]
    where, add = _missing_demonstrations(task, rows, missing), _ADD_DEMONSTRATIONS
    if missing and teacher.template == "demo":
        raise UsageError(
            f"data.teacher.template='demo' needs a demonstration in every train row, but {where}; {add}, or set "
            "data.teacher.template: correct_solution and data.teacher.no_correct_rollout: skip"
        )
    if missing and teacher.template == "correct_solution" and teacher.evidence == "demonstration":
        raise UsageError(
            f"data.teacher.evidence='demonstration' shows the demonstration under 'Correct solution:', but {where}; "
            f"{add}, or set data.teacher.evidence: rollout and data.teacher.no_correct_rollout: skip"
        )
    if missing and teacher.no_correct_rollout == "demo":
        raise UsageError(
            f"data.teacher.no_correct_rollout='demo' falls back to the demonstration, but {where}; set "
            f"data.teacher.no_correct_rollout: skip, or {add}"
        )


def check_stratify_key(task: Task, key: str) -> None:
    """Fail at start-up, in one line, when a train row has no ``meta[key]`` to stratify by, or an unhashable one.

    Raises:
        UsageError: no train rows, or rows lacking the key (the message counts them and names the keys every row
            has), or a value that cannot be grouped (a list, a mapping).
    """
    rows = train_rows(task)
    lacking = [example.id for example in rows if key not in example.meta]
    if lacking:
        shared = sorted(set.intersection(*(set(example.meta) for example in rows)))
        raise UsageError(
            f"data.stratify_by={key!r}: {len(lacking)} of {len(rows)} train rows of {task.name} have no meta key "
            f"{key!r} (first: {lacking[:1]}); the meta keys every train row has: {shared}; set data.stratify_by to "
            "one of them, or null"
        )
    for example in rows:
        try:
            hash(example.meta[key])
        except TypeError:
            raise UsageError(
                f"data.stratify_by={key!r}: train row {example.id!r} of {task.name} has a "
                f"{type(example.meta[key]).__name__} there; stratify by a key whose values are strings or numbers"
            ) from None


def check_warm_start_data(task: Task) -> None:
    """Fail at start-up, in one line, when no train row has a demonstration for the warm start to learn.

    Raises:
        UsageError: no train rows, or none with a demonstration (the message names the key and the fix).
    """
    rows = train_rows(task)
    missing = [example.id for example in rows if example.demonstration is None]
    if len(missing) == len(rows):
        raise UsageError(
            f"model.warm_start trains on demonstrations, but {_missing_demonstrations(task, rows, missing)}; set "
            "model.warm_start: null (a large instruct model that already follows the answer format needs none), "
            f"or {_ADD_DEMONSTRATIONS}"
        )


_ADD_DEMONSTRATIONS = "add demonstrations to the rows (docs/tasks.md)"


def train_rows(task: Task) -> list[TaskExample]:
    """The task's train rows.

    Raises:
        UsageError: a malformed row (naming its file and line), or no train rows (naming the task's splits).
    """
    try:
        rows = task.split("train") if "train" in task.splits() else []
    except ValueError as err:  # a malformed row (the loaders name the file and line)
        raise UsageError(f"data.task ({task.name}): {one_line(err)}") from err
    if not rows:
        raise UsageError(
            f"data.task ({task.name}) has no train rows (splits: {task.splits()}); check its train settings (a "
            "file-backed task needs a train source)"
        )
    return rows


def _missing_demonstrations(task: Task, rows: list[TaskExample], missing: list[str]) -> str:
    return f"{len(missing)} of {len(rows)} train rows of {task.name} have no demonstration (first: {missing[:1]})"
