"""File-backed tasks: :class:`FileTask`, and where its rows come from (``datasets`` folder, JSONL, JSON, Parquet, hub).

A *source* is one string:

- a folder written by ``Dataset.save_to_disk`` (or a ``DatasetDict`` folder; append ``:split`` to choose a split,
  default: the task split being loaded);
- a ``.jsonl`` file (one JSON object per line; blank lines skipped) or a ``.json`` file holding a list of objects;
- a ``.parquet`` file;
- otherwise a hub dataset name, optionally ``name:split`` (``datasets.load_dataset(name, split=split)``).

Rows come back as plain dicts. A :class:`FileTask` maps the task splits ``train``/``val``/``test``/``ood`` to sources
and turns each row into a :class:`~caopd_pl.tasks.base.TaskExample`; a new file format is a subclass that says how
(``example``) and which verifier judges it (``default_verifier``). It checks every source when the task is built: a
file or a local-looking path (``/``, ``./``, ``../``, ``~``, a file suffix) must exist, and a hub name needs a
reachable hub (or ``HF_HUB_OFFLINE`` and a cached copy), so a typo fails in one line before the warm start, not after
it. A split is read and parsed once, on first use.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from caopd_pl.errors import UsageError
from caopd_pl.files import read_jsonl
from caopd_pl.models.source import hub_endpoint, hub_offline, hub_reachable, looks_local
from caopd_pl.tasks.base import Task, TaskExample
from caopd_pl.verifiers import Verifier

SPLITS = ("train", "val", "test", "ood")


def _split_suffix(source: str, default: str) -> tuple[str, str]:
    head, sep, tail = source.rpartition(":")
    if sep and tail and "/" not in tail and not Path(source).exists():
        return head, tail
    return source, default


def load_rows(source: str, split: str = "train", limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of ``source`` (see the module docstring), at most ``limit`` of them.

    Args:
        source: A folder, file, or hub name (optionally ``:split``).
        split: The split to take from a ``DatasetDict`` folder or a hub dataset when ``source`` names none.
        limit: Keep only the first ``limit`` rows.

    Raises:
        ValueError: an unreadable file or a malformed JSONL line.
    """
    path = Path(source)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
    elif path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise ValueError(f"{path}: a .json source must hold a list of objects")
    else:
        rows = _load_with_datasets(source, split)
    return rows if limit is None else rows[:limit]


def _load_with_datasets(source: str, split: str) -> list[dict[str, Any]]:
    import datasets

    if Path(source).suffix == ".parquet":
        data = datasets.Dataset.from_parquet(source)
    else:
        name, split = _split_suffix(source, split)
        if Path(name).is_dir():
            data = datasets.load_from_disk(name)
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise ValueError(f"{name} has splits {list(data)}, not {split!r} (write {name}:<split>)")
                data = data[split]
        else:
            data = datasets.load_dataset(name, split=split)
    return [dict(row) for row in data]


def check_source(split: str, source: str) -> None:
    """Fail in one line when ``source`` cannot be read: a missing file or folder, or a hub name with no hub.

    Raises:
        UsageError: naming ``data.task.init_args.<split>``, the value and the fix.
    """
    name, _ = _split_suffix(source, split)
    key = f"data.task.init_args.{split}={source!r}"
    if Path(name).expanduser().exists():
        return
    if Path(name).suffix in (".jsonl", ".json", ".parquet") or looks_local(name):
        raise UsageError(f"{key}: no such file or folder; give an existing JSONL/JSON/Parquet file or datasets folder")
    if not hub_offline() and not hub_reachable():
        raise UsageError(
            f"{key} is no local file or folder, and {hub_endpoint()} (hub datasets) cannot be reached; check the "
            "path, or set HF_HUB_OFFLINE=1 to use a cached copy"
        )


class FileTask(Task):
    """A task whose splits are rows read from files: a subclass turns one row into an example (:meth:`example`).

    Subclasses set ``default_verifier`` (the judge when the config names none) and implement :meth:`example`; the
    sources, their checks, the loading and the caching are here. A subclass that needs more settings overrides
    ``__init__`` and passes the shared ones on.
    """

    default_verifier: ClassVar[str] = ""
    """The registered verifier used when ``verifier`` is None."""

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        ood: str | None = None,
        limit: int | None = None,
        verifier: str | Verifier | dict[str, Any] | None = None,
    ) -> None:
        """Read the splits named by their sources (a split without a source is not served).

        Args:
            train: Source of the train split (folder, JSONL, JSON, Parquet or hub name; see
                :mod:`caopd_pl.tasks.sources`).
            val: Source of the validation split.
            test: Source of the test split.
            ood: Source of an out-of-distribution split.
            limit: Rows kept per split (None: all).
            verifier: The judge: a registered name (``math``, ``code``, ``chemistry``, ``tooluse``, ...), a class
                path, or ``{class_path, init_args}``; None: the task's own (its class docstring names it).

        Raises:
            UsageError: no split has a source, a negative ``limit``, or a source that cannot be read.
        """
        super().__init__(verifier if verifier is not None else self.default_verifier)
        self.sources = {name: source for name, source in zip(SPLITS, (train, val, test, ood)) if source}
        if not self.sources:
            raise UsageError(f"data.task ({self.name}) needs a source for at least one of {SPLITS}: give e.g. train")
        if limit is not None and limit < 0:
            raise UsageError(f"data.task.init_args.limit={limit}: must be >= 0 (or null for every row)")
        for name, source in self.sources.items():
            check_source(name, source)
        self.limit = limit
        self._examples: dict[str, list[TaskExample]] = {}

    @abstractmethod
    def example(self, row: dict[str, Any], default_id: str) -> TaskExample:
        """One row as an example; ``default_id`` (``<split>:<row index>``) serves when the row has no ``id``.

        Raises:
            ValueError: the row lacks what the format needs (the message names the row).
        """

    def splits(self) -> tuple[str, ...]:
        return tuple(name for name in SPLITS if name in self.sources)

    def split(self, name: str) -> list[TaskExample]:
        """The examples of split ``name``, read and parsed on the first call.

        Raises:
            ValueError: the split has no source (the message names the splits there are).
        """
        if name not in self.sources:
            raise ValueError(f"this task has splits {self.splits()}, not {name!r}")
        if name not in self._examples:
            rows = load_rows(self.sources[name], split=name, limit=self.limit)
            self._examples[name] = [self.example(row, f"{name}:{index}") for index, row in enumerate(rows)]
        return self._examples[name]
