"""``verify``: fields are kept, correct/detail/status added, malformed lines reported by number without stopping the
rest."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from caopd_pl.__main__ import main
from caopd_pl.commands import report, verify
from caopd_pl.verifiers import Verdict, Verifier


def test_verify_keeps_fields_and_survives_malformed_lines(tmp_path, capsys):
    lines = [
        json.dumps({"completion": "<answer>A</answer>\nConfidence: 0.9", "reference": "A", "id": 1, "model": "m"}),
        "{not json",
        json.dumps({"completion": "<answer>B</answer>", "reference": {"answer": "C"}, "id": 3}),
        json.dumps(["a list"]),
        json.dumps({"completion": "<answer>A</answer>"}),
        "",
        json.dumps({"completion": "<answer>A</answer>", "reference": {"bad": "ref"}, "id": 7}),
    ]
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    status = verify.main(["--verifier", "chemistry", "--input", str(source), "--output", str(target), "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "line 4: expected a JSON object" in err and "line 5: missing" in err
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in out] == [1, 3, 7]
    assert out[0] == {**json.loads(lines[0]), "correct": True, "detail": "answer=A", "status": "correct"}
    assert out[1]["correct"] is False and out[1]["status"] == "wrong"
    assert out[2]["status"] == "error" and out[2]["detail"].startswith("error:")
    assert "0 timeouts, 1 verifier errors" in err and "3 malformed" in err


def test_verify_with_class_path_and_init_args(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"completion": "<answer>F/C=C\\F</answer>", "reference": {"smiles": "F/C=C/F"}}) + "\n"
    )
    argv = ["--verifier", "caopd_pl.verifiers.chemistry.ChemistryVerifier", "--init-args", '{"stereo": false}']
    assert verify.main([*argv, "--input", str(source), "--output", str(target), "--quiet"]) == 0
    assert json.loads(target.read_text())["correct"] is True


def judged_ids(path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def row(id_: int, answer: str = "A") -> bytes:
    return json.dumps({"completion": f"<answer>{answer}</answer>", "reference": "A", "id": id_}).encode() + b"\n"


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
def test_verify_refuses_an_output_that_is_the_input(tmp_path, capsys, spelling):
    source = tmp_path / "in.jsonl"
    source.write_bytes(row(1) + row(2))
    target = {"same": source, "dotted": tmp_path / "." / "in.jsonl"}.get(spelling, tmp_path / "out.jsonl")
    if spelling == "symlink":
        target.symlink_to(source)
    if spelling == "hardlink":
        target.hardlink_to(source)
    argv = ["verify", "--verifier", "chemistry", "--input", str(source), "--output", str(target), "--quiet"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"caopd_pl verify: error: --output={str(target)!r} is the input file (--input={str(source)!r}); writing it "
        "would erase the input: give another path\n"
    )
    assert source.read_bytes() == row(1) + row(2)  # untouched


def test_verify_judges_every_decodable_line_around_bad_bytes(tmp_path, capsys):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    bad = b'{"completion": "<answer>A</answer> \xff\xfe", "reference": "A", "id": 2}\n'
    source.write_bytes(row(1) + bad + row(3, "B") + b"\xc3\n" + row(5))
    argv = ["--verifier", "chemistry", "--input", str(source), "--output", str(target), "--quiet", "--batch-size", "1"]
    assert verify.main(argv) == 1
    err = capsys.readouterr().err
    assert "skipped line 2: not UTF-8 (byte 0xff at column 36)" in err
    assert "skipped line 4: not UTF-8 (byte 0xc3 at column 1)" in err
    assert "judged 3 lines: 2 correct" in err and "2 malformed lines skipped" in err
    assert judged_ids(target) == [1, 3, 5]


def test_verify_reads_a_file_that_starts_with_a_byte_order_mark(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + row(1))
    assert verify.main(["--verifier", "chemistry", "--input", str(source), "--output", str(target), "--quiet"]) == 0
    assert judged_ids(target) == [1]


BAD_PATHS = {
    "output is a folder": (
        lambda tmp: ["--input", str(tmp / "in.jsonl"), "--output", str(tmp)],
        "--output={tmp!r}: a folder; give a file path, e.g. '{tmp}/judged.jsonl'",
    ),
    "output folder missing": (
        lambda tmp: ["--input", str(tmp / "in.jsonl"), "--output", str(tmp / "no/out.jsonl")],
        "--output='{tmp}/no/out.jsonl': folder '{tmp}/no' does not exist; create it first",
    ),
    "input missing": (
        lambda tmp: ["--input", str(tmp / "none.jsonl"), "--output", str(tmp / "out.jsonl")],
        "--input='{tmp}/none.jsonl': no such file; give a JSONL with completion and reference per line",
    ),
    "input is a folder": (
        lambda tmp: ["--input", str(tmp), "--output", str(tmp / "out.jsonl")],
        "--input={tmp!r}: a folder; give a JSONL with completion and reference per line",
    ),
}


@pytest.mark.parametrize("case", BAD_PATHS)
def test_verify_bad_paths_stop_in_one_line(tmp_path, capsys, case):
    (tmp_path / "in.jsonl").write_bytes(row(1))
    argv, message = BAD_PATHS[case]
    assert main(["verify", "--verifier", "chemistry", *argv(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err == f"caopd_pl verify: error: {message.format(tmp=str(tmp_path))}\n"
    assert (tmp_path / "in.jsonl").read_bytes() == row(1)


def test_verify_unknown_verifier_stops_in_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_bytes(row(1))
    argv = ["--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl")]
    assert main(["verify", "--verifier", "chemistsry", *argv]) == 2
    err = capsys.readouterr().err
    unknown = "caopd_pl verify: error: --verifier='chemistsry' is not a registered verifier"
    assert err.startswith(unknown) and err.count("\n") == 1
    assert not (tmp_path / "out.jsonl").exists()


class HangsOnStop(Verifier):
    """Correct when the completion is "ok"; on a completion "stop" it writes the file it names and hangs."""

    def verify(self, completion: str, reference: str) -> Verdict:
        if completion.startswith("stop "):
            Path(completion.removeprefix("stop ")).write_text("hanging")
            time.sleep(600)  # killed long before
        return Verdict(completion == "ok", "")


def test_a_killed_verify_keeps_the_lines_it_judged(tmp_path):
    source, target, marker = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "hanging"
    rows = [{"completion": "ok", "reference": "", "id": i} for i in range(3)]
    rows.append({"completion": f"stop {marker}", "reference": "", "id": 3})
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "caopd_pl", "verify", "--verifier", "test_verify_command.HangsOnStop"]
    command += ["--input", str(source), "--output", str(target), "--batch-size", "3", "--quiet"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)  # while judging the second batch
    process.communicate(timeout=60)
    assert judged_ids(target) == [0, 1, 2]  # the first batch, on disk


@pytest.mark.slow
def test_verify_and_report_count_timeouts_and_errors_apart(tmp_path, capsys):
    # A real verifier's four outcomes: decided right, decided wrong, out of time, unable to judge (bad reference).
    rows = [
        {"completion": "\\boxed{3}\nConfidence: 0.4", "reference": "2"},
        {"completion": "\\boxed{2}\nConfidence: 0.9", "reference": "2"},
        {"completion": "\\boxed{9^{9^{9^9}}}\nConfidence: 0.9", "reference": "3"},
        {"completion": "\\boxed{2}\nConfidence: 0.9", "reference": None},
    ]
    source, target = tmp_path / "in.jsonl", tmp_path / "judged.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    argv = ["--verifier", "math", "--init-args", '{"timeout": 2, "workers": 1}', "--quiet"]
    assert verify.main([*argv, "--input", str(source), "--output", str(target)]) == 0
    judged = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["status"] for row in judged] == ["wrong", "correct", "timeout", "error"]
    assert [row["correct"] for row in judged] == [False, True, False, False]
    assert "judged 4 lines: 1 correct, 1 timeouts, 1 verifier errors, 0 malformed" in capsys.readouterr().err

    with target.open("a") as handle:  # a status that contradicts its verdict is a malformed line, not a count
        handle.write(json.dumps({"completion": "x", "correct": True, "status": "timeout"}) + "\n")
    assert report.main(["--input", str(target), "--out", str(tmp_path / "rep")]) == 1
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert (metrics["n"], metrics["timeouts"], metrics["verifier_errors"], metrics["malformed_lines"]) == (4, 1, 1, 1)
    out, err = capsys.readouterr()
    assert "skipped line 5: 'status' must be one of correct, wrong, timeout, error and agree with 'correct'" in err
    assert "timeouts" in out and "verifier_errors" in out


def test_a_lone_surrogate_is_written_and_the_lines_after_it_are_judged(tmp_path, capsys):
    # Valid JSON: "\ud83d" is half of an emoji (a completion cut off mid-character). UTF-8 cannot hold it.
    lines = [json.dumps({"completion": f"<answer>{i}</answer>", "reference": str(i), "id": i}) for i in range(6)]
    lines[2] = '{"completion": "<answer>2</answer> \\ud83d", "reference": "2", "id": 2}'
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    assert main(["verify", "--verifier", "exact", "--input", str(source), "--output", str(target), "--quiet"]) == 0
    out = [json.loads(line) for line in target.read_bytes().decode("utf-8").splitlines()]
    assert [row["id"] for row in out] == list(range(6))  # every line judged and written, in order
    assert out[2]["completion"] == json.loads(lines[2])["completion"]  # the same string, read back
    assert "judged 6 lines" in capsys.readouterr().err


class _FillingFile:
    """An unbuffered binary file on a disk that holds ``room`` more bytes: then a short write, then ENOSPC."""

    def __init__(self, path: Path, room: int) -> None:
        self.file, self.room, self.name = open(path, "wb", buffering=0), room, str(path)

    def write(self, data) -> int:
        if self.room == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.file.write(bytes(data[: self.room]))
        self.room -= written
        return written

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def _judged_lines(count: int) -> list[str]:
    return [
        json.dumps({"completion": f"<answer>{i}</answer>" + " pad" * 20, "reference": str(i)}) for i in range(count)
    ]


def _assert_whole_lines(target: Path, err: str) -> list[dict]:
    data = target.read_bytes()
    assert data.endswith(b"\n")  # no torn last line
    out = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert f"the output holds the first {len(out)} judged lines" in err
    return out


def test_a_full_disk_stops_verify_in_one_line_with_whole_lines_kept(tmp_path, capsys, monkeypatch):
    # ENOSPC injected at the write layer (a real full filesystem: the test below, where a tmpfs can be mounted).
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(_judged_lines(100)) + "\n")
    monkeypatch.setattr(verify, "open_output", lambda path: _FillingFile(path, room=3000))
    args = ["verify", "--verifier", "exact", "--input", str(source), "--output", str(target), "--batch-size", "8"]
    assert main([*args, "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"caopd_pl verify: error: no space left on device writing '{target}'")
    out = _assert_whole_lines(target, err[0])
    assert 0 < len(out) < 100 and len(out) % 8 == 0  # whole batches: the one cut short is cut back off


def test_verify_on_a_really_full_disk(tmp_path, small_disk, capsys):
    source, target = tmp_path / "in.jsonl", small_disk / "judged.jsonl"
    source.write_text("\n".join(_judged_lines(1000)) + "\n")  # ~120 KB of output for a 64 KB disk
    args = ["verify", "--verifier", "exact", "--input", str(source), "--output", str(target), "--batch-size", "16"]
    assert main([*args, "--quiet"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not any("Traceback" in line for line in err)
    assert f"(tmpfs at {small_disk}, 0 B free)" in err[0]  # names the disk
    out = _assert_whole_lines(target, err[0])
    assert [row["reference"] for row in out] == [str(i) for i in range(len(out))]
