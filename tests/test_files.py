"""Crash-safe writes (caopd_pl.files) leave the modes a plain write would: other users can read the results."""

import os
import stat

from caopd_pl.files import atomic_save_dir, atomic_write_text


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
