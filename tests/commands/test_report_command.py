"""``report``: the training code's calibration metrics over judged completions, written and printed."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from caopd_pl.__main__ import main
from caopd_pl.commands import report
from caopd_pl.metrics import calibration_summary


def test_report_writes_metrics_and_plot(tmp_path, capsys):
    rows = [
        {"completion": "A\nConfidence: 0.9", "correct": True},
        {"completion": "B\nConfidence: 80%", "correct": False},
        {"completion": "C without a confidence", "correct": True},
        {"completion": "D\nConfidence: 0.2", "correct": False},
    ]
    source = tmp_path / "judged.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n" + json.dumps({"completion": "x"}) + "\n")
    status = report.main(["--input", str(source), "--out", str(tmp_path / "rep")])
    assert status == 1  # two malformed lines, reported, the rest measured
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    expected = calibration_summary(
        torch.tensor([0.9, 0.8, 0.0, 0.2]),
        torch.tensor([True, False, True, False]),
        torch.tensor([True, True, False, True]),
    )
    assert metrics == pytest.approx({**expected, "timeouts": 0, "verifier_errors": 0, "malformed_lines": 2})
    assert metrics["format_adherence"] == pytest.approx(0.75)
    png = (tmp_path / "rep" / "reliability.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    captured = capsys.readouterr()
    assert "ece" in captured.out and "skipped line 5" in captured.err and "skipped line 6" in captured.err


def test_report_without_usable_lines(tmp_path):
    source = tmp_path / "empty.jsonl"
    source.write_text("\n")
    assert report.main(["--input", str(source), "--out", str(tmp_path / "rep")]) == 2


def judged(text: str, correct: bool) -> bytes:
    return json.dumps({"completion": f"{text}\nConfidence: 0.5", "correct": correct}).encode() + b"\n"


def test_report_measures_every_decodable_line_around_bad_bytes(tmp_path, capsys):
    source = tmp_path / "judged.jsonl"
    source.write_bytes(judged("A", True) + b'{"completion": "\xff", "correct": true}\n' + judged("B", False))
    assert report.main(["--input", str(source), "--out", str(tmp_path / "rep")]) == 1
    assert "skipped line 2: not UTF-8 (byte 0xff at column 17)" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["n"] == 2 and metrics["accuracy"] == 0.5 and metrics["malformed_lines"] == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("input_folder", "--input={tmp!r}: a folder; give a JSONL of judged completions (verify's output)"),
        ("out_file", "--out='{tmp}/judged.jsonl': a file; give a folder for metrics.json and reliability.png"),
        (
            "out_under_file",
            "--out='{tmp}/judged.jsonl/rep': cannot create the folder (Not a directory); give another path",
        ),
    ],
)
def test_report_bad_paths_stop_in_one_line(tmp_path, capsys, case, message):
    source = tmp_path / "judged.jsonl"
    source.write_bytes(judged("A", True))
    args = {
        "input_folder": ["--input", str(tmp_path), "--out", str(tmp_path / "rep")],
        "out_file": ["--input", str(source), "--out", str(source)],
        "out_under_file": ["--input", str(source), "--out", str(source / "rep")],
    }[case]
    assert main(["report", *args]) == 2
    assert capsys.readouterr().err == f"caopd_pl report: error: {message.format(tmp=str(tmp_path))}\n"
    assert source.read_bytes() == judged("A", True)


def _reports(tmp_path) -> tuple[Path, Path]:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(judged("A", True) + judged("B", False))
    second.write_bytes(judged("A", True) + judged("B", True) + judged("C", True))
    return first, second


def _assert_report_is_the_first(out: Path, metrics: bytes, png: bytes) -> None:
    assert (out / "metrics.json").read_bytes() == metrics and (out / "reliability.png").read_bytes() == png
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "reliability.png"]  # no temporary file left


def test_a_report_the_disk_cannot_hold_leaves_the_previous_one_whole(tmp_path, capsys, monkeypatch):
    # ENOSPC injected where the figure is written (a real full filesystem: the test below, where one can be mounted).
    import matplotlib.figure

    first, second = _reports(tmp_path)
    out = tmp_path / "rep"
    assert main(["report", "--input", str(first), "--out", str(out)]) == 0
    metrics, png = (out / "metrics.json").read_bytes(), (out / "reliability.png").read_bytes()

    def disk_full(self, file, *args, **kwargs):
        file.write(b"\x89PNG half a figure")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", disk_full)
    capsys.readouterr()
    assert main(["report", "--input", str(second), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and err[0].startswith("caopd_pl report: error: no space left on device writing ")
    _assert_report_is_the_first(out, metrics, png)  # not a new metrics.json beside the old figure


def test_report_on_a_really_full_disk(tmp_path, small_disk, capsys):
    first, second = _reports(tmp_path)
    out = small_disk / "rep"
    assert main(["report", "--input", str(first), "--out", str(out)]) == 0
    metrics, png = (out / "metrics.json").read_bytes(), (out / "reliability.png").read_bytes()
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 8192))  # room for a new metrics.json, not for a figure
    capsys.readouterr()
    assert main(["report", "--input", str(second), "--out", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"(tmpfs at {small_disk}, " in err[0] and "Traceback" not in err[0]
    _assert_report_is_the_first(out, metrics, png)
