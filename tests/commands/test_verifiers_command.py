"""``verifiers``: lists every installed verifier and where it comes from."""

from __future__ import annotations

import json

from caopd_pl.commands import verifiers


def test_lists_builtins_with_origin(capsys):
    assert verifiers.main([]) == 0
    out = capsys.readouterr().out
    for name in ("chemistry", "code", "exact", "math", "tooluse"):
        assert any(line.split()[:2] == [name, "built-in"] for line in out.splitlines()), name


def test_json_output(capsys):
    assert verifiers.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["math"] == "built-in"
