"""Verifier plugins: built-in names, class_path (as YAML gives it), and a third-party entry point."""

from __future__ import annotations

import sys
import textwrap

import pytest

from caopd_pl.verifiers import Verdict, Verifier, available, build
from caopd_pl.verifiers.registry import _REGISTRY


def test_builtins_are_registered():
    assert {"math", "code", "chemistry", "tooluse", "exact"} <= set(available())


def test_class_path_dict_as_in_yaml():
    verifier = build({"class_path": "caopd_pl.verifiers.chemistry.ChemistryVerifier", "init_args": {"stereo": False}})
    assert verifier.stereo is False


def test_entry_point_plugin(tmp_path, monkeypatch):
    package = tmp_path / "caopd_demo_plugin.py"
    package.write_text(
        textwrap.dedent(
            """
            from caopd_pl.verifiers import Verdict, Verifier

            class YesVerifier(Verifier):
                def verify(self, completion, reference):
                    return Verdict(completion.strip() == "yes", "said " + completion.strip())
            """
        )
    )
    dist = tmp_path / "caopd_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: caopd-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[caopd_pl.verifiers]\nyes = caopd_demo_plugin:YesVerifier\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(_REGISTRY, "yes", raising=False)
    try:
        assert "caopd-demo-plugin" in available()["yes"]
        verifier = build("yes")
        assert verifier.verify_batch(["yes", "no"], [None, None]) == [
            Verdict(True, "said yes"),
            Verdict(False, "said no"),
        ]
    finally:
        _REGISTRY.pop("yes", None)
        sys.modules.pop("caopd_demo_plugin", None)


def test_raising_verifier_costs_one_verdict():
    class Broken(Verifier):
        def verify(self, completion, reference):
            raise RuntimeError("boom")

    verdict = Broken().verify_batch(["x"], [None])[0]
    assert verdict == Verdict.error("error: RuntimeError: boom") and verdict.failed


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match="available: .*math"):
        build("no-such-verifier")
