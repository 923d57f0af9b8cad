"""Chemistry verifier: the paper's <answer> letter rule, SMILES by RDKit, and the real science rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from caopd_pl.verifiers import build
from caopd_pl.verifiers.chemistry import ChemistryVerifier, canonical_smiles, extract_tagged_answer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "caopd-eval"


def test_last_answer_tag_wins():
    text = "<reasoning>maybe <answer>A</answer></reasoning>\n<answer>\nC\n</answer>\nConfidence: 0.7"
    assert extract_tagged_answer(text) == "C"
    assert extract_tagged_answer("no tags, the answer is B") is None


@pytest.mark.parametrize(
    ("completion", "reference", "correct"),
    [
        ("<answer>B</answer>", "B", True),
        ("<answer> b </answer>", {"answer": "B"}, True),
        ("<answer>B</answer>", {"answer": "C"}, False),
        ("<answer>B: CCO</answer>", "B", False),  # the paper's rule: exactly the letter
        ("The answer is B", "B", False),
        ("<answer>OCC</answer>", {"smiles": "CCO"}, True),
        ("<answer>C1=CC=CC=C1</answer>", {"smiles": "c1ccccc1"}, True),
        ("<answer>CCN</answer>", {"smiles": "CCO"}, False),
        ("<answer>C C O</answer>", {"smiles": "CCO"}, False),
        ("<answer></answer>", {"smiles": "CCO"}, False),
        ("<answer>not(a)smiles</answer>", {"smiles": "CCO"}, False),
    ],
)
def test_verdicts(completion, reference, correct):
    assert ChemistryVerifier().verify(completion, reference).correct is correct


def test_stereo_and_charge_options():
    cis, trans = "<answer>F/C=C\\F</answer>", {"smiles": "F/C=C/F"}
    assert not ChemistryVerifier().verify(cis, trans).correct
    assert ChemistryVerifier(stereo=False).verify(cis, trans).correct
    acid, acetate = "<answer>CC(=O)O</answer>", {"smiles": "CC(=O)[O-]"}
    assert not ChemistryVerifier().verify(acid, acetate).correct
    assert ChemistryVerifier(charge=False).verify(acid, acetate).correct


def test_canonical_smiles_rejects_before_parsing():
    assert canonical_smiles("") is None and canonical_smiles(" CCO") is None and canonical_smiles("C" * 1000) is None
    assert canonical_smiles("OCC") == canonical_smiles("CCO")


def test_bad_reference_is_a_failed_verdict_in_batch():
    verdict = build("chemistry").verify_batch(["<answer>A</answer>"], [{"letter": "A"}])[0]
    assert not verdict.correct and verdict.failed


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real eval rows not present at {SHARED}")
def test_real_science_rows():
    import datasets

    rows = datasets.load_from_disk(str(SHARED / "science"))
    verifier = build("chemistry")
    letters = "ABCD"
    right = [f"<reasoning>\nok\n</reasoning>\n<answer>\n{a}\n</answer>\nConfidence: 0.8" for a in rows["answer"]]
    wrong = [f"<answer>{letters[(letters.index(a) + 1) % 4]}</answer>" for a in rows["answer"]]
    assert all(v.correct for v in verifier.verify_batch(right, rows["answer"]))
    assert not any(v.correct for v in verifier.verify_batch(wrong, rows["answer"]))
