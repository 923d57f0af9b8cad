"""Every command in the README and in docs/ runs as written after the two set-up commands: its files exist and its
arguments parse.

Commands are the lines of each page's ``bash`` blocks and the ``$ `` lines of its plain blocks (a trailing ``\\``
continues a line, ``&&`` splits a line into commands; ``# ...`` comments are dropped), README.md first, then
``docs/*.md`` in name order, as ``scripts/readme_commands.py`` reads them: the list ``scripts/readme_check.sh``
runs (CI). Each is checked here without running it (leading ``NAME=value`` settings dropped): Lightning commands
with ``--print_config`` (every key and type checked, nothing built), argparse tools and benchmarks by running their
``main`` up to the end of argument parsing, pip commands by parsing their requirements. Each must be listed to run
or declared not run with a reason; the check script itself is run here on pages of stub commands. Every relative
link of these pages resolves, anchors included.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from caopd_pl.__main__ import main
from caopd_pl.commands import LIGHTNING_COMMANDS, TOOLS

pytestmark = pytest.mark.slow  # seconds each: the full suite runs them, the fast lane (-m "not slow") does not

REPO = Path(__file__).resolve().parents[1]
PYTHON = ".venv/bin/python"


def _load_readme_commands() -> ModuleType:
    """``scripts/readme_commands.py`` (not a package: the check script runs it with the system ``python3``)."""
    spec = importlib.util.spec_from_file_location("readme_commands", REPO / "scripts" / "readme_commands.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readme = _load_readme_commands()
DOCUMENTED = readme.documented_commands()  # (page, command), README.md first
COMMANDS = [command for _, command in DOCUMENTED]
README_LINES_AT_MOST = 300  # a newcomer reads it in five minutes; the rest lives in docs/
# Files a command names that the reader writes: the test parses the command with the page's own example instead.
YOUR_FILES = {"my_run.yaml": ("docs/tasks.md", "yaml")}


class Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


@pytest.fixture
def parse_only(monkeypatch):
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    # Tools whose parser is jsonargparse's (continual) stop there too; the Lightning commands stop at --print_config.
    from jsonargparse import ArgumentParser as JsonParser
    from lightning.pytorch.cli import LightningArgumentParser

    json_parse_args = JsonParser.parse_args

    def json_parse_then_stop(self, *args, **kwargs):
        parsed = json_parse_args(self, *args, **kwargs)
        if isinstance(self, LightningArgumentParser):
            return parsed
        raise Parsed(parsed)

    monkeypatch.setattr(JsonParser, "parse_args", json_parse_then_stop)
    monkeypatch.chdir(REPO)


def test_the_readme_has_its_commands():
    commands = readme.readme_commands()
    assert commands[:2] == [
        "bash scripts/install.sh",
        f"{PYTHON} -m caopd_pl fit --config configs/quickstart.yaml",
    ]
    assert any(command.startswith(f"{PYTHON} -m caopd_pl test") for command in commands)
    assert any(command.startswith(f"{PYTHON} -m caopd_pl pull") for command in commands)


def test_the_readme_fits_in_five_minutes():
    lines = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_LINES_AT_MOST, f"README.md has {lines} lines: move details to a page under docs/"


def test_the_docs_commands_are_checked_too():
    pages = {page for page, _ in DOCUMENTED}
    assert "README.md" in pages and {"docs/verifiers.md", "docs/real_model.md", "docs/reproducing.md"} <= pages
    assert [page for page, _ in DOCUMENTED] == sorted(
        (page for page, _ in DOCUMENTED), key=lambda page: (page != "README.md", page)
    )


@pytest.mark.parametrize("command", dict.fromkeys(COMMANDS))
def test_readme_command_exists_and_parses(command, parse_only, tmp_path):
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    if words[:2] == ["nice", "-n"]:  # a lower priority for the command that follows
        words = words[3:]
    if words[0] == "srun":  # SLURM runs the command on every task: check the command
        words.pop(0)
    if words[0] == ".venv/bin/torchrun":  # torchrun's own options, then the module it runs on every rank
        words = [PYTHON, *words[words.index("-m") :]]
    program, args = words[0], [_your_file(arg, tmp_path) for arg in words[1:]]
    if program == "bash":
        assert (REPO / args[0]).is_file(), command
        return
    if program == "jq":  # not installed by scripts/install.sh: such a command is declared, never run
        assert command in readme.DECLARED, command
        return
    if program == "python3":  # the system Python, before .venv exists: only to create it
        assert args == ["-m", "venv", ".venv"], command
        return
    assert program in (PYTHON, ".venv/bin/ruff", ".venv/bin/pip"), (
        f"{command!r}: run the venv's programs ({PYTHON} ...)"
    )
    assert (REPO / program).exists() or not (REPO / ".venv").exists(), program
    for path in _named_configs(args):
        assert (REPO / path).is_file(), f"{command!r}: {path} does not exist"
    if program == ".venv/bin/pip":
        _parse_pip(args, command)
    elif program == PYTHON and args[:2] == ["-m", "caopd_pl"]:
        _parse_caopd_pl(args[2:], command)
    elif program == PYTHON and args[:1] == ["-m"]:
        assert importlib.util.find_spec(args[1]) is not None, command
        paths = [arg for arg in args[2:] if arg.startswith("tests/")]
        assert all((REPO / path).exists() for path in paths), command
    elif program == PYTHON and args[:1] == ["-c"]:
        compile(args[1], "<-c>", "exec")
    elif program == PYTHON:
        _parse_script(REPO / args[0], args[1:], command)


def _your_file(arg: str, tmp_path: Path) -> str:
    """``arg``, or for a file the reader writes (:data:`YOUR_FILES`), the page's example of it, in ``tmp_path``."""
    if arg not in YOUR_FILES:
        return arg
    page, language = YOUR_FILES[arg]
    text = (REPO / page).read_text(encoding="utf-8")
    example = re.search(rf"```{language}\n(.*?)```", text[text.index(f"`{arg}`") :], re.S)
    assert example, f"{page} shows no {language} block after naming {arg}"
    (tmp_path / arg).write_text(example.group(1))
    return str(tmp_path / arg)


def _parse_pip(args: list[str], command: str) -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = (REPO / "pyproject.toml").read_text()  # tomllib is 3.11+, the project 3.10+
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^([\w-]+) *=", section, re.M)
    assert args[0] in ("install", "uninstall"), command
    editable = False
    for arg in args[1:]:
        if arg in ("-e", "--editable"):
            editable = True
        elif arg.startswith("-"):
            assert arg in ("-y", "-q", "--upgrade", "-U"), f"{command!r}: {arg}"
        elif editable:  # this project, with its extras: '.[vllm,dev]'
            path, _, wanted = arg.partition("[")
            assert (REPO / path / "pyproject.toml").is_file(), command
            assert set(filter(None, wanted.rstrip("]").split(","))) <= set(extras), command
            editable = False
        else:
            assert canonicalize_name(Requirement(arg).name), command


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
    argv, search = sys.argv, sys.path[:]
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(path.parent))  # as `python path` does: the script's folder first
    try:
        spec.loader.exec_module(module)
        main = getattr(module, "main", None)
        required = main and any(
            parameter.default is inspect.Parameter.empty for parameter in inspect.signature(main).parameters.values()
        )
        with pytest.raises(Parsed):
            if main and not required:
                main()
            else:  # the parser lives under `if __name__ == "__main__":` (examples/python_api.py)
                runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = argv, search


def test_every_readme_command_is_run_or_declared_with_a_reason():
    unlisted = [(command, note) for kind, command, note in readme.plan(DOCUMENTED) if kind == "unlisted"]
    assert not unlisted, f"add each to RUN or DECLARED in scripts/readme_commands.py: {unlisted}"
    assert all(reason.strip() for reason in readme.DECLARED.values())


def test_the_lists_name_only_commands_the_pages_have():
    assert not set(readme.RUN) & set(readme.DECLARED), "a command is either run or declared, not both"
    stale = [command for command in (*readme.RUN, *readme.DECLARED) if command not in COMMANDS]
    assert not stale, f"no longer in README.md or docs/, remove from scripts/readme_commands.py: {stale}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    anchors: set[str] = set()
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for heading in re.findall(r"^#{1,6} +(.+?) *$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_every_relative_link_resolves():
    broken = []
    for page in readme.pages(REPO):
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_ci_runs_the_readme_check():
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "bash scripts/readme_check.sh" in lines


# ---- scripts/readme_check.sh on a README of stub commands ----------------------------------------------------------

STUB_README = """# stub

```bash
.venv/bin/python -m caopd_pl verifiers  # a comment
.venv/bin/python -m caopd_pl fit --config configs/quickstart.yaml
```

```
$ OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kl_memory.py --dtype float32 bfloat16
```

```bash
.venv/bin/python -m caopd_pl verifiers
.venv/bin/ruff check . && .venv/bin/ruff format --check .
```
"""
STUB_DECLARED = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kl_memory.py --dtype float32 bfloat16"
STUB_RUFF = '#!/usr/bin/env bash\necho "ruff $*" >> calls.txt\n'
FAILING_RUFF = """#!/usr/bin/env bash
echo "ruff $*" >> calls.txt
if [ "$1" = check ]; then for i in $(seq 1 60); do echo "ruff output line $i"; done; exit 3; fi
"""


def _stub_repo(tmp_path: Path, readme_text: str, ruff: str, docs: dict[str, str] | None = None) -> Path:
    """A copy of the check scripts beside ``readme_text`` as README.md (and ``docs``, page name to text), with stub
    ``.venv`` programs that log calls.
    """
    (tmp_path / "scripts").mkdir()
    for name in ("readme_check.sh", "readme_commands.py"):
        shutil.copy(REPO / "scripts" / name, tmp_path / "scripts" / name)
    (tmp_path / "README.md").write_text(readme_text)
    for name, text in (docs or {}).items():
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / name).write_text(text)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    programs = {"python": '#!/usr/bin/env bash\necho "python $*" >> calls.txt\necho "stub python ran"\n', "ruff": ruff}
    for name, text in programs.items():
        (tmp_path / ".venv" / "bin" / name).write_text(text)
        (tmp_path / ".venv" / "bin" / name).chmod(0o755)
    return tmp_path


def _check(root: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("READMECHECK_")}
    return subprocess.run(
        ["bash", "scripts/readme_check.sh"], cwd=root, env={**environment, **env}, capture_output=True, text=True
    )


def test_readme_check_runs_each_command_once_in_order_and_times_it(tmp_path):
    root = _stub_repo(tmp_path, STUB_README, ruff='#!/usr/bin/env bash\necho "ruff $*" >> calls.txt\n')
    done = _check(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "calls.txt").read_text().splitlines() == [
        "python -m caopd_pl verifiers",  # once: the README's repeat is not run again
        "python -m caopd_pl fit --config configs/quickstart.yaml",
        "ruff check .",
        "ruff format --check .",
    ]  # the declared kl_memory benchmark did not run
    table = done.stdout[done.stdout.index("seconds  status") :]
    assert re.search(r"\n +1 +\d+\.\d +ok +\.venv/bin/python -m caopd_pl verifiers\n", table)
    assert re.search(r"\n +4 +- +same as #1, run once +\.venv/bin/python -m caopd_pl verifiers\n", table)
    assert re.search(r"\n +3 +- +not run \(see below\) +OMP_NUM_THREADS=1 \.venv/bin/python benchmarks/kl", table)
    assert readme.DECLARED[STUB_DECLARED] in done.stdout
    assert "readme_check: passed" in done.stdout
    assert [path.name for path in sorted((root / "runs" / "readme_check").iterdir())] == [
        "01.log",
        "02.log",
        "05.log",
        "06.log",
    ]


def test_readme_check_stops_at_the_first_failure_naming_it_with_its_last_lines(tmp_path):
    root = _stub_repo(tmp_path, STUB_README, ruff=FAILING_RUFF)
    done = _check(root)
    assert done.returncode == 1
    assert "readme_check: FAILED [5] $ .venv/bin/ruff check .\n" in done.stdout
    assert "exit status 3 after" in done.stdout
    summary = done.stdout[done.stdout.index("readme_check: FAILED") :]
    assert "  | ruff output line 60" in summary and "  | ruff output line 21" in summary
    assert "ruff output line 20\n" not in summary  # the last 40 lines, not all of them
    assert re.search(r"\n +5 +\d+\.\d +FAILED \(exit 3\) +\.venv/bin/ruff check \.\n", summary)
    assert "ruff format" not in (root / "calls.txt").read_text()  # nothing after the failure ran


def test_readme_check_refuses_a_command_neither_run_nor_declared(tmp_path):
    root = _stub_repo(tmp_path, STUB_README + "\n```bash\n.venv/bin/python -m caopd_pl unheard-of\n```\n", ruff="")
    done = _check(root)
    assert done.returncode == 1
    assert "readme_check: not listed: .venv/bin/python -m caopd_pl unheard-of" in done.stderr
    assert not (root / "calls.txt").exists()  # refused before running anything


def test_readme_check_dry_run_runs_nothing(tmp_path):
    root = _stub_repo(tmp_path, STUB_README, ruff="")
    done = _check(root, READMECHECK_DRY="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("would run") == 4
    assert not (root / "calls.txt").exists()
    assert "nothing was run" in done.stdout


def test_readme_check_reports_a_silent_failure_too(tmp_path):
    root = _stub_repo(tmp_path, STUB_README, ruff="#!/usr/bin/env bash\nexit 5\n")
    done = _check(root)
    assert done.returncode == 1
    assert re.search(r"\n +5 +\d+\.\d +FAILED \(exit 5\) +\.venv/bin/ruff check \.\n", done.stdout), done.stdout


def test_readme_check_refuses_to_run_beside_an_earlier_runs_outputs(tmp_path):
    root = _stub_repo(tmp_path, STUB_README, ruff="")
    (root / "runs" / "quickstart" / "checkpoints").mkdir(parents=True)  # a second fit would write last-v1.ckpt
    done = _check(root)
    assert done.returncode == 1
    assert "readme_check: runs/ holds an earlier run's outputs (runs/quickstart);" in done.stderr
    assert not (root / "calls.txt").exists()
    assert _check(root, READMECHECK_REUSE_RUNS="1").returncode == 0


def test_readme_check_runs_the_docs_pages_after_the_readme_in_name_order(tmp_path):
    docs = {
        "b.md": "```bash\n.venv/bin/ruff check . \\\n    && .venv/bin/python -m caopd_pl verifiers\n```\n",
        "a.md": "```bash\n.venv/bin/ruff format --check .\n```\n",
    }
    root = _stub_repo(tmp_path, "# stub\n\n```bash\n.venv/bin/ruff check .\n```\n", ruff=STUB_RUFF, docs=docs)
    done = _check(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "calls.txt").read_text().splitlines() == [
        "ruff check .",  # README.md
        "ruff format --check .",  # docs/a.md
        "python -m caopd_pl verifiers",  # docs/b.md, after its repeat of the README's command
    ]
    assert re.search(r"\n +3 +- +same as #1, run once +\.venv/bin/ruff check \.\n", done.stdout)


def test_readme_check_refuses_an_unlisted_docs_command_naming_its_page(tmp_path):
    docs = {"new.md": "```bash\n.venv/bin/python -m caopd_pl unheard-of\n```\n"}
    root = _stub_repo(tmp_path, STUB_README, ruff="", docs=docs)
    done = _check(root)
    assert done.returncode == 1
    assert "readme_check: not listed: .venv/bin/python -m caopd_pl unheard-of (in docs/new.md: add it" in done.stderr
    assert not (root / "calls.txt").exists()
