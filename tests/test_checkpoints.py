"""A damaged checkpoint, or one holding NaN weights, is refused in one line by every command that reads one."""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from caopd_pl.__main__ import main
from caopd_pl.checkpoints import check_archive, check_weights, read_checkpoint
from caopd_pl.errors import UsageError


def overwrite_with_nan(path: Path, record: str, offset: int = 8) -> None:
    """Overwrite four bytes of ``record``'s data in the archive at ``path`` with a float32 NaN, in place."""
    info = zipfile.ZipFile(path).getinfo(record)
    with path.open("r+b") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)  # the local file header: the data follows its name and extra field
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(info.header_offset + 30 + name_length + extra_length + offset)
        handle.write(struct.pack("<f", float("nan")))


def largest_record(path: Path) -> str:
    records = [info for info in zipfile.ZipFile(path).infolist() if "/data/" in info.filename]
    return max(records, key=lambda info: info.file_size).filename


def test_a_changed_record_fails_its_checksum(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}}, path)
    check_archive(path)  # as written
    overwrite_with_nan(path, "weights/data/0")
    assert torch.isnan(torch.load(path)["state_dict"]["w"]).any()  # torch.load itself sees nothing wrong
    with pytest.raises(UsageError, match=r"is damaged: its record weights/data/0 fails its CRC-32 check"):
        read_checkpoint(path)


def test_a_truncated_file_is_not_a_whole_checkpoint(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UsageError, match="is not a whole checkpoint"):
        read_checkpoint(path)


def test_non_finite_weights_are_refused_and_finite_ones_pass(tmp_path):
    weights = {"a": torch.ones(3), "steps": torch.tensor(3), "b": torch.tensor([1.0, float("inf")])}
    with pytest.raises(UsageError, match=r"1 weight tensor\(s\) hold NaN or infinity \(first: b\)"):
        check_weights(weights, tmp_path / "x.ckpt")
    check_weights({"a": torch.ones(3), "empty": torch.empty(0)}, tmp_path / "x.ckpt")


@pytest.fixture
def damaged(tiny_run, tmp_path) -> Path:
    """The tiny run's last checkpoint with four bytes of its largest tensor overwritten with NaN."""
    path = tmp_path / "damaged.ckpt"
    shutil.copy(tiny_run / "checkpoints/last.ckpt", path)
    overwrite_with_nan(path, largest_record(path))
    return path


@pytest.fixture
def diverged(tiny_run, tmp_path) -> Path:
    """The tiny run's last checkpoint, whole, with one student weight NaN (as a diverged run saves it)."""
    checkpoint = torch.load(tiny_run / "checkpoints/last.ckpt", weights_only=False)
    name = next(key for key in checkpoint["state_dict"] if key.startswith("student."))
    checkpoint["state_dict"][name].view(-1)[0] = float("nan")
    path = tmp_path / "diverged.ckpt"
    torch.save(checkpoint, path)
    return path


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["damaged", "diverged"])
def test_export_refuses_a_bad_checkpoint_and_writes_nothing(which, request, tmp_path, capsys):
    path = request.getfixturevalue(which)
    capsys.readouterr()  # what building the fixture printed
    assert main(["export", "--ckpt_path", str(path), "--out", str(tmp_path / "model")]) == 2
    line = one_line(capsys)
    expected = "fails its CRC-32 check" if which == "damaged" else "hold NaN or infinity (first: student."
    assert line.startswith(f"caopd_pl export: error: --ckpt_path='{path}'") and expected in line
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["fit", "test"])
@pytest.mark.parametrize("which", ["damaged", "diverged"])
def test_lightning_commands_refuse_a_bad_checkpoint_before_anything_runs(which, command, request, tiny_run, capsys):
    path = request.getfixturevalue(which)
    capsys.readouterr()  # what building the fixture printed
    root = path.parent
    config = (tiny_run / "config.yaml").read_text().replace(str(tiny_run), str(root))
    (root / "config.yaml").write_text(config)
    args = [command, "--config", str(root / "config.yaml"), "--ckpt_path", str(path)]
    assert main([*args, "--trainer.max_epochs", "3"] if command == "fit" else args) == 2
    expected = "fails its CRC-32 check" if which == "damaged" else "hold NaN or infinity"
    assert expected in one_line(capsys)
    assert not any((root / folder).exists() for folder in ("logs", "test", "checkpoints"))
