"""Chemistry verifier: multiple-choice letters (as the CaOPD paper scores them) and SMILES answers by RDKit.

The completion's answer is the content of the last ``<answer>...</answer>`` before its confidence (the science
system prompt asks for ``<reasoning>...</reasoning><answer>X</answer>``). The base class strips the confidence
(:func:`caopd_pl.confidence.strip_confidence`, the one definition every verifier shares) before ``verify``, so a
verdict never depends on it; the paper's scoring reads the whole text, which differs only for a completion that
writes an ``<answer>`` after a confidence key. References:

- ``{"answer": "B"}`` or a bare ``"B"``: correct when the answer is that letter (case-insensitive), as in the paper's
  release, where anything else inside the tags is wrong;
- ``{"smiles": "CCO"}``: correct when the answer parses as a molecule whose canonical SMILES equals the reference's.
  Empty strings and strings with white space are rejected before parsing; ``stereo`` and ``charge`` decide whether
  stereochemistry and formal charges count.
"""

from __future__ import annotations

import re
from typing import Any

from caopd_pl.verifiers.base import Verdict, Verifier

_LETTER = re.compile(r"[A-Za-z]")
MAX_SMILES = 500


def extract_tagged_answer(completion: str) -> str | None:
    """The stripped content of the last ``<answer>...</answer>``, or None when there is none. Never raises."""
    if not isinstance(completion, str):
        return None
    lowered = completion.lower()  # searched from the end: linear even on a megabyte of opening tags
    end = lowered.rfind("</answer>")
    start = lowered.rfind("<answer>", 0, max(end, 0))
    if end < 0 or start < 0:
        return None
    return completion[start + len("<answer>") : end].strip()


def canonical_smiles(smiles: str, stereo: bool = True, charge: bool = True) -> str | None:
    """RDKit canonical SMILES, or None for an empty, spaced, over-long or unparsable string.

    Args:
        smiles: The candidate string.
        stereo: Keep stereochemistry (``isomericSmiles``); False compares constitution only.
        charge: Keep formal charges; False neutralises the molecule first (RDKit's ``Uncharger``).
    """
    if not smiles or len(smiles) > MAX_SMILES or any(char.isspace() for char in smiles):
        return None
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None:
        return None
    if not charge:
        from rdkit.Chem.MolStandardize import rdMolStandardize

        molecule = rdMolStandardize.Uncharger().uncharge(molecule)
    return Chem.MolToSmiles(molecule, isomericSmiles=stereo)


def parse_chemistry_reference(reference: Any) -> tuple[str, str]:
    """``("letter", "B")`` or ``("smiles", "CCO")`` from the accepted reference formats.

    Raises:
        ValueError: the reference is none of ``"B"``, ``{"answer": "B"}``, ``{"smiles": "..."}``.
    """
    if isinstance(reference, str) and _LETTER.fullmatch(reference.strip()):
        return "letter", reference.strip().upper()
    if isinstance(reference, dict):
        if isinstance(reference.get("smiles"), str):
            return "smiles", reference["smiles"]
        if isinstance(reference.get("answer"), str) and _LETTER.fullmatch(reference["answer"].strip()):
            return "letter", reference["answer"].strip().upper()
    raise ValueError(f'a chemistry reference is "B", {{"answer": "B"}} or {{"smiles": "CCO"}}; got {reference!r:.200}')


class ChemistryVerifier(Verifier):
    """Correct when the last ``<answer>`` before the confidence is the reference letter, or the reference molecule."""

    name = "chemistry"

    def __init__(self, stereo: bool = True, charge: bool = True) -> None:
        """Args:
        stereo: Whether stereochemistry must match for SMILES answers.
        charge: Whether formal charges must match for SMILES answers.
        """
        self.stereo, self.charge = stereo, charge

    def verify(self, completion: str, reference: Any) -> Verdict:
        kind, expected = parse_chemistry_reference(reference)
        answer = extract_tagged_answer(completion)
        if answer is None:
            return Verdict(False, "no <answer> tag")
        if kind == "letter":
            return Verdict(answer.upper() == expected, f"answer={answer[:50]}")
        wanted = canonical_smiles(expected, self.stereo, self.charge)
        if wanted is None:
            raise ValueError(f"reference SMILES {expected!r} does not parse")
        got = canonical_smiles(answer, self.stereo, self.charge)
        if got is None:
            return Verdict(False, f"answer is not a valid SMILES: {answer[:100]!r}")
        return Verdict(got == wanted, f"answer={got}")
