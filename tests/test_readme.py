"""Every command in the README runs as written after the two set-up commands: its files exist and its arguments parse.

Commands are the lines of the README's ``bash`` blocks and the ``$ `` lines of its plain blocks (``&&`` splits a
line into commands; ``# ...`` comments and leading ``NAME=value`` settings are dropped). Each is checked without
running it: Lightning commands with ``--print_config`` (every key and type checked, nothing built), argparse tools
and benchmarks by running their ``main`` up to the end of argument parsing.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from caopd_pl.__main__ import LIGHTNING_COMMANDS, TOOLS, main

REPO = Path(__file__).resolve().parents[1]
PYTHON = ".venv/bin/python"


def readme_commands() -> list[str]:
    """The README's commands, in order."""
    commands = []
    for language, body in re.findall(r"```(\w*)\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        if language == "bash":
            lines = body.splitlines()
        elif language == "":
            lines = [line[2:] for line in body.splitlines() if line.startswith("$ ")]
        else:
            continue
        for line in lines:
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


COMMANDS = readme_commands()


class Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


@pytest.fixture
def parse_only(monkeypatch):
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.chdir(REPO)


def test_the_readme_has_its_commands():
    assert COMMANDS[:2] == [
        "bash scripts/install.sh",
        f"{PYTHON} -m caopd_pl fit --config configs/quickstart.yaml",
    ]
    assert any(command.startswith(f"{PYTHON} -m caopd_pl test") for command in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_exists_and_parses(command, parse_only):
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    program, args = words[0], words[1:]
    if program == "bash":
        assert (REPO / args[0]).is_file(), command
        return
    assert program in (PYTHON, ".venv/bin/ruff"), f"{command!r}: run the venv's programs ({PYTHON} ...)"
    assert (REPO / program).exists() or not (REPO / ".venv").exists(), program
    for path in _named_configs(args):
        assert (REPO / path).is_file(), f"{command!r}: {path} does not exist"
    if program == PYTHON and args[:2] == ["-m", "caopd_pl"]:
        _parse_caopd_pl(args[2:], command)
    elif program == PYTHON and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, command
    elif program == PYTHON:
        _parse_script(REPO / args[0], args[1:], command)


def _named_configs(args: list[str]) -> list[str]:
    after_flag = [value for flag, value in zip(args, args[1:]) if flag == "--config"]
    return after_flag + [arg for arg in args if arg.endswith((".yaml", ".yml")) and arg not in after_flag]


def _parse_caopd_pl(args: list[str], command: str) -> None:
    name = args[0]
    assert name in (*LIGHTNING_COMMANDS, *TOOLS), command
    if name in LIGHTNING_COMMANDS:
        from caopd_pl.cli import cli_main

        with pytest.raises(SystemExit) as stopped:  # --print_config prints the parsed config and exits
            cli_main([*args, "--print_config"])
        assert stopped.value.code in (0, None), command
        return
    with pytest.raises(Parsed):
        main(args)


def _parse_script(path: Path, args: list[str], command: str) -> None:
    assert path.is_file(), command
    spec = importlib.util.spec_from_file_location(f"readme_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = sys.argv
    sys.argv = [str(path), *args]
    try:
        with pytest.raises(Parsed):
            module.main()
    finally:
        sys.argv = argv
