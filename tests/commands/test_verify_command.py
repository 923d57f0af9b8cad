"""``verify``: fields are kept, correct/detail added, malformed lines reported by number without stopping the rest."""

from __future__ import annotations

import json

from caopd_pl.commands import verify


def test_verify_keeps_fields_and_survives_malformed_lines(tmp_path, capsys):
    lines = [
        json.dumps({"completion": "<answer>A</answer>\nConfidence: 0.9", "reference": "A", "id": 1, "model": "m"}),
        "{not json",
        json.dumps({"completion": "<answer>B</answer>", "reference": {"answer": "C"}, "id": 3}),
        json.dumps(["a list"]),
        json.dumps({"completion": "<answer>A</answer>"}),
        "",
        json.dumps({"completion": "<answer>A</answer>", "reference": {"bad": "ref"}, "id": 7}),
    ]
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("\n".join(lines) + "\n")
    status = verify.main(["--verifier", "chemistry", "--input", str(source), "--output", str(target), "--quiet"])
    assert status == 1
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "line 4: expected a JSON object" in err and "line 5: missing" in err
    out = [json.loads(line) for line in target.read_text().splitlines()]
    assert [row["id"] for row in out] == [1, 3, 7]
    assert out[0] == {**json.loads(lines[0]), "correct": True, "detail": "answer=A"}
    assert out[1]["correct"] is False and out[2]["detail"].startswith("error:")
    assert "1 verifier errors" in err and "3 malformed" in err


def test_verify_with_class_path_and_init_args(tmp_path):
    source, target = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"completion": "<answer>F/C=C\\F</answer>", "reference": {"smiles": "F/C=C/F"}}) + "\n"
    )
    argv = ["--verifier", "caopd_pl.verifiers.chemistry.ChemistryVerifier", "--init-args", '{"stereo": false}']
    assert verify.main([*argv, "--input", str(source), "--output", str(target), "--quiet"]) == 0
    assert json.loads(target.read_text())["correct"] is True
