"""The command layer leans on what Lightning and jsonargparse do not promise, so pyproject.toml pins the versions it
was checked against; this fails on any other installed version and names what to re-check before moving the pin."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
RECHECK = {
    "lightning": [
        "caopd_pl.cli.stage_parser: LightningCLI._parser, the only way to a subcommand's parser",
        "caopd_pl.cli.CaOPDCLI._parse_ckpt_path and _run_subcommand: overrides of LightningCLI's private steps",
        "caopd_pl.module._ignore_teacher_eval_mode_warning: the text of FitLoop's eval-mode warning",
        "caopd_pl.callbacks.hide_version_number: ProgressBar.get_metrics still the bar's one source of metrics",
        "caopd_pl.cli.quiet_console: the texts of Lightning's tips and of the deprecation it silences",
    ],
    "jsonargparse": [
        "caopd_pl.cli._unknown_keys, _without_union_noise, _init_arg_hint and CaOPDCLI._one_line: they read "
        "jsonargparse's error messages (tests/test_errors.py checks every one-line error)",
        "caopd_pl.cli._option_keys: get_defaults() still lists every config key (the did-you-mean candidates)",
    ],
}


def pinned(library: str) -> str:
    found = re.search(rf'"{library}(?:\[\w+\])?==([\w.]+)"', PYPROJECT.read_text())
    assert found, f"pyproject.toml pins no version of {library}"
    return found.group(1)


@pytest.mark.parametrize("library", sorted(RECHECK))
def test_installed_version_is_the_pinned_one_the_cli_was_checked_against(library):
    installed, checked = metadata.version(library), pinned(library)
    recheck = "".join(f"\n  - {item}" for item in RECHECK[library])
    assert installed == checked, (
        f"{library} {installed} is installed; the command layer was checked against {checked}. Re-check:{recheck}\n"
        f"then pin {library}=={installed} in pyproject.toml."
    )
