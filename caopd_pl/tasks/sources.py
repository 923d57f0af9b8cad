"""Where a file-backed task's rows come from: a ``datasets`` folder, JSONL, JSON, Parquet, or a Hugging Face hub name.

A *source* is one string:

- a folder written by ``Dataset.save_to_disk`` (or a ``DatasetDict`` folder; append ``:split`` to choose a split,
  default: the task split being loaded);
- a ``.jsonl`` file (one JSON object per line; blank lines skipped) or a ``.json`` file holding a list of objects;
- a ``.parquet`` file;
- otherwise a hub dataset name, optionally ``name:split`` (``datasets.load_dataset(name, split=split)``).

Rows come back as plain dicts. :class:`SplitSources` maps the task splits ``train``/``val``/``test``/``ood`` to
sources and caches what it loaded. It checks every source when the task is built: a file or a local-looking path
(``/``, ``./``, ``../``, ``~``, a file suffix) must exist, and a hub name needs a reachable hub (or
``HF_HUB_OFFLINE`` and a cached copy), so a typo fails in one line before the warm start, not after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caopd_pl.errors import UsageError
from caopd_pl.models.source import hub_endpoint, hub_offline, hub_reachable, looks_local

SPLITS = ("train", "val", "test", "ood")


def _split_suffix(source: str, default: str) -> tuple[str, str]:
    head, sep, tail = source.rpartition(":")
    if sep and tail and "/" not in tail and not Path(source).exists():
        return head, tail
    return source, default


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file.

    Raises:
        ValueError: a line is not a JSON object (the message names the file and line number).
    """
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


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


class SplitSources:
    """The sources of a task's splits, loaded on first use and cached."""

    def __init__(self, sources: dict[str, str | None], limit: int | None = None) -> None:
        """Args:
        sources: Split name -> source; ``None`` leaves the split out.
        limit: Rows kept per split.

        Raises:
            ValueError: no split has a source, an unknown split name, or a negative ``limit``.
        """
        unknown = set(sources) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {SPLITS}")
        self.sources = {name: source for name, source in sources.items() if source}
        if not self.sources:
            raise ValueError(f"a file-backed task needs a source for at least one of {SPLITS}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        for name, source in self.sources.items():
            check_source(name, source)
        self.limit = limit
        self._rows: dict[str, list[dict[str, Any]]] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in SPLITS if name in self.sources)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The rows of split ``name``.

        Raises:
            ValueError: the split has no source.
        """
        if name not in self.sources:
            raise ValueError(f"this task has splits {self.names()}, not {name!r}")
        if name not in self._rows:
            self._rows[name] = load_rows(self.sources[name], split=name, limit=self.limit)
        return self._rows[name]
