"""Verifier plugins: built-in names, class_path (as YAML gives it), a third-party entry point, and a verifier in a
user's own file, which never sees the confidence line."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from helpers import user_module

from caopd_pl.__main__ import main
from caopd_pl.verifiers import Verdict, Verifier, available, build
from caopd_pl.verifiers.base import VERIFIERS


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
    VERIFIERS.remove("yes")
    try:
        assert "caopd-demo-plugin" in available()["yes"]
        verifier = build("yes")
        assert verifier.verify_batch(["yes", "no"], [None, None]) == [
            Verdict(True, "said yes"),
            Verdict(False, "said no"),
        ]
    finally:
        VERIFIERS.remove("yes")
        sys.modules.pop("caopd_demo_plugin", None)


def test_raising_verifier_costs_one_verdict():
    class Broken(Verifier):
        def verify(self, completion, reference):
            raise RuntimeError("boom")

    verdict = Broken().verify_batch(["x"], [None])[0]
    assert verdict == Verdict.error("error: RuntimeError: boom") and verdict.failed


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"^verifier='no-such-verifier' is not a registered verifier; choose .*'math'"):
        build("no-such-verifier")
    with pytest.raises(ValueError, match=r"did you mean 'math'\?$"):
        build("maths")


LAST_NUMBER = """
import re

from caopd_pl.verifiers import Verdict, Verifier


class LastNumberVerifier(Verifier):
    \"\"\"Correct when the completion's last number equals the reference.\"\"\"

    seen = []

    def verify(self, completion, reference):
        LastNumberVerifier.seen.append(completion)
        numbers = re.findall(r"-?\\d+(?:\\.\\d+)?", completion)
        answer = numbers[-1] if numbers else None
        return Verdict(answer is not None and float(answer) == float(reference), f"answer={answer}")
"""
ANSWERS = [  # (completion, reference, correct): a verifier that read the confidence would get each one wrong
    ("The sum is 12.\nConfidence: 0.9", 12, True),
    ("Answer: 7\nConfidence: 12", 12, False),
    ("Answer: 3 **Confidence:** 1", 1, False),
]


@pytest.fixture
def last_number(tmp_path, monkeypatch):
    """A "last number" verifier in a module of the user's own (a file on sys.path), written from the plugin docs."""
    user_module(tmp_path, monkeypatch, "my_last_number", LAST_NUMBER)
    return "my_last_number.LastNumberVerifier"


def test_a_users_verifier_is_one_class_and_never_sees_the_confidence_line(last_number):
    verifier = build({"class_path": last_number})  # the one config line: verifier: {class_path: ...}
    completions, references, correct = zip(*ANSWERS)
    assert [verdict.correct for verdict in verifier.verify_batch(completions, references)] == list(correct)
    assert [verifier.verify(c, r).correct for c, r, _ in ANSWERS] == list(correct)
    assert not any("onfidence" in seen for seen in type(verifier).seen)
    assert type(verifier).seen[0] == "The sum is 12."


def test_a_users_verifier_judges_through_the_entry_point(tmp_path, last_number):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"completion": c, "reference": r}) + "\n" for c, r, _ in ANSWERS))
    assert main(["verify", "--verifier", last_number, "--input", str(source), "--output", str(target), "--quiet"]) == 0
    judged = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["correct"] for row in judged] == [correct for _, _, correct in ANSWERS]
