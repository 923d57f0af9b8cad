"""Crash-safe writes (caopd_pl.files) leave the modes a plain write would: other users can read the results."""

import errno
import os
import stat

import pytest

from caopd_pl.errors import DiskFull
from caopd_pl.files import atomic_save_dir, atomic_write_files, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_take_the_umask_modes_not_the_temporary_files_private_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")

        def save(folder):
            (folder / "sub").mkdir()
            atomic_write_text(folder / "sub" / "weights.txt", "w")

        atomic_save_dir(tmp_path / "model", save)
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "metrics.json") == 0o644  # mkstemp alone gives 0600
    assert _mode(tmp_path / "model") == 0o755  # mkdtemp alone gives 0700
    assert _mode(tmp_path / "model" / "sub") == 0o755 and _mode(tmp_path / "model" / "sub" / "weights.txt") == 0o644


def test_files_written_together_are_all_replaced_or_none(tmp_path):
    (tmp_path / "metrics.json").write_text("old numbers")
    (tmp_path / "figure.png").write_text("old figure")

    def no_room(file):
        file.write(b"half a fig")
        raise OSError(errno.ENOSPC, "No space left on device")

    writes = {tmp_path / "metrics.json": lambda file: file.write(b"new numbers"), tmp_path / "figure.png": no_room}
    with pytest.raises(DiskFull, match=f"no space left on device writing '{tmp_path / 'figure.png'}'"):
        atomic_write_files(writes)
    assert (tmp_path / "metrics.json").read_text() == "old numbers" and (tmp_path / "figure.png").read_text() == (
        "old figure"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png", "metrics.json"]  # no temporary file left
    atomic_write_files({path: lambda file: file.write(b"new") for path in writes})
    assert (tmp_path / "metrics.json").read_text() == (tmp_path / "figure.png").read_text() == "new"


def test_a_full_disk_anywhere_is_one_line_and_exit_status_3(tmp_path, capsys, monkeypatch):
    # A library's own write (here: the verifier registry's listing) fails with ENOSPC: no traceback, status 3.
    from caopd_pl.__main__ import main
    from caopd_pl.commands import verifiers

    def full(argv):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(verifiers, "main", full)
    assert main(["verifiers"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("caopd_pl verifiers: error: no space left on device (")
