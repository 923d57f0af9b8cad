"""The wheel installs everything under ``caopd_pl``: the repository's ``verifiers/`` and ``continual/`` folders become
``caopd_pl.verifiers`` and ``caopd_pl.continual`` and never shadow the PyPI projects named ``verifiers`` and
``continual``."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_only_the_caopd_pl_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("caopd_pl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"caopd_pl", next(n.split("/")[0] for n in names if ".dist-info/" in n)}
    assert "caopd_pl/verifiers/base.py" in names and "caopd_pl/continual/__init__.py" in names
    assert not any(name.startswith(("verifiers/", "continual/", "tests/")) for name in names)


def test_installed_subpackages_resolve_inside_caopd_pl():
    import caopd_pl.continual
    import caopd_pl.verifiers

    assert Path(caopd_pl.verifiers.__file__).parent == REPO / "verifiers"
    assert Path(caopd_pl.continual.__file__).parent == REPO / "continual"
