"""Row sources: JSONL, JSON, Parquet, datasets folders (incl. DatasetDict splits) give the same rows; FileTask's
checks and caching."""

from __future__ import annotations

import json

import datasets
import pytest

from caopd_pl.tasks.jsonl import JsonlTask
from caopd_pl.tasks.sources import load_rows

ROWS = [{"prompt": "What is 1+1?", "answer": "2"}, {"prompt": "What is 2+2?", "answer": "4"}]


def test_every_format_gives_the_same_rows(tmp_path):
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    (tmp_path / "rows.json").write_text(json.dumps(ROWS))
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "rows.parquet"))
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "folder"))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    for source in ("rows.jsonl", "rows.json", "rows.parquet", "folder", "dict:test"):
        assert load_rows(str(tmp_path / source)) == ROWS, source
    assert load_rows(str(tmp_path / "dict"), split="test", limit=1) == ROWS[:1]
    with pytest.raises(ValueError, match="splits"):
        load_rows(str(tmp_path / "dict"), split="train")


def test_malformed_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_rows(str(path))


def test_file_task_checks_its_sources_and_parses_a_split_once(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    task = JsonlTask(train=None, test=str(path))
    assert task.splits() == ("test",) and task.verifier.name == "math"  # the class's default verifier
    first = task.split("test")
    path.write_text(json.dumps(ROWS[1]) + "\n")
    assert task.split("test") is first and first[0].reference == "2"  # read and parsed once, then served
    with pytest.raises(ValueError, match="not 'train'"):
        task.split("train")
    with pytest.raises(ValueError, match="at least one"):
        JsonlTask(train=None)
    with pytest.raises(ValueError, match=r"data.task.init_args.limit=-1: must be >= 0"):
        JsonlTask(test=str(path), limit=-1)
    with pytest.raises(ValueError, match=r"data.task.init_args.val='missing.jsonl': no such file"):
        JsonlTask(val="missing.jsonl")
