"""Every row of docs/errors.md's bad-input table: the command prints exactly the documented line and exits with 2.

Each case runs ``python -m caopd_pl`` in-process (``main``) from a folder holding ``config.yaml`` (the quickstart
shrunk to seconds, :func:`test_cli.small_config`) and whatever data the case needs, so the documented commands
use short relative paths. Each line must come within 30 s (no network wait) and contain no traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from test_cli import metrics_rows, small_config

from caopd_pl.__main__ import main

pytestmark = pytest.mark.slow  # seconds each: the full suite runs them, the fast lane (-m "not slow") does not

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "errors.md"
JSONL_TASK = "caopd_pl.tasks.jsonl.JsonlTask"


def edit_config(root: Path, **sections: dict) -> None:
    """Merge ``sections`` (``data={...}``, ``model={...}``) into ``root/config.yaml``, one level deep."""
    path = root / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for name, values in sections.items():
        config[name] |= values
    path.write_text(yaml.safe_dump(config))


def jsonl_task(root: Path, rows: list[dict], teacher: dict | None = None, warm_start: bool = True) -> None:
    """Point the config at ``train.jsonl``/``val.jsonl`` holding ``rows`` (judged by ``exact``)."""
    for split in ("train", "val"):
        (root / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = {"class_path": JSONL_TASK, "init_args": {"verifier": "exact", "train": "train.jsonl", "val": "val.jsonl"}}
    data = {"task": task, "test_split": "val", "predict_split": "val"}
    edit_config(root, data=data | ({"teacher": teacher} if teacher else {}))
    if not warm_start:
        edit_config(root, model={"warm_start": None})


def checkpoint(path: Path, state_dict: dict | None = None, **entries) -> None:
    """A small checkpoint file: ``state_dict`` (a finite weight by default) and ``entries``."""
    import torch

    torch.save({"state_dict": state_dict or {"w": torch.ones(64)}, "hyper_parameters": {}, **entries}, path)


def damaged_checkpoint(root: Path) -> None:
    from test_checkpoints import overwrite_with_nan

    checkpoint(root / "model.ckpt")
    overwrite_with_nan(root / "model.ckpt", "model/data/0")


def diverged_checkpoint(root: Path) -> None:
    import torch

    checkpoint(root / "diverged.ckpt", {"student.lm_head.weight": torch.tensor([1.0, float("nan")])})


def other_run(root: Path) -> None:
    (root / "runs/c/base").mkdir(parents=True)
    state = {"fingerprint": "0123456789abcdef", "finished": ["warm_start"], "settings": {"seed": 1}}
    (root / "runs/c/base/state.json").write_text(json.dumps(state))
    continual = yaml.safe_load((REPO / "configs/continual/tiny.yaml").read_text()) | {"fit_config": "config.yaml"}
    (root / "continual.yaml").write_text(yaml.safe_dump(continual))


NO_DEMO = [{"prompt": f"{i}+{i}=?", "answer": str(2 * i)} for i in range(4)]
FIT = ["fit", "--config", "config.yaml"]
ROWS = {
    "model_path": (
        [*FIT, "--model.model.name_or_path", "./checkpoints/my-model"],
        None,
        "caopd_pl fit: error: model.model.name_or_path='./checkpoints/my-model': no such directory; give an existing "
        "checkpoint directory or a hub name such as Qwen/Qwen3-0.6B",
    ),
    "model_offline": (
        [*FIT, "--model.model.name_or_path", "Qwen/Qwen3-0.6Bb"],
        None,
        "caopd_pl fit: error: model.model.name_or_path='Qwen/Qwen3-0.6Bb' is not in the local Hugging Face cache and "
        "HF_HUB_OFFLINE is set; download it first (hf download NAME) or give a local checkpoint directory",
    ),
    "model_unreachable": (
        [*FIT, "--model.model.name_or_path", "Qwen/Qwen3-0.6Bb"],
        None,
        "caopd_pl fit: error: model.model.name_or_path='Qwen/Qwen3-0.6Bb' is not in the local Hugging Face cache and "
        "http://127.0.0.1:9 cannot be reached; check the name and the network, or give a local checkpoint directory",
    ),
    "data_file": (
        FIT,
        lambda root: edit_config(
            root, data={"task": {"class_path": JSONL_TASK, "init_args": {"train": "data/train.jsonl"}}}
        ),
        "caopd_pl fit: error: data.task.init_args.train='data/train.jsonl': no such file or folder; give an existing "
        "JSONL/JSON/Parquet file or datasets folder",
    ),
    "data_folder": (
        FIT,
        lambda root: edit_config(
            root, data={"task": {"class_path": JSONL_TASK, "init_args": {"train": "./science_rows"}}}
        ),
        "caopd_pl fit: error: data.task.init_args.train='./science_rows': no such file or folder; give an existing "
        "JSONL/JSON/Parquet file or datasets folder",
    ),
    "option_typo": (
        [*FIT, "--data.rollout.num_sampls", "4"],
        None,
        "caopd_pl fit: error: unrecognized arguments: --data.rollout.num_sampls 4; did you mean "
        "--data.rollout.num_samples? (every option: python -m caopd_pl fit --help)",
    ),
    "option_prefix": (
        [*FIT, "--data.rollout.num_sample", "4"],
        None,
        "caopd_pl fit: error: unrecognized arguments: --data.rollout.num_sample 4; did you mean "
        "--data.rollout.num_samples? (every option: python -m caopd_pl fit --help)",
    ),
    "yaml_typo": (
        [*FIT, "--config", "typo.yaml"],
        lambda root: (root / "typo.yaml").write_text("data:\n  rollout:\n    num_sampls: 4\n"),
        "caopd_pl fit: error: Subcommand 'fit' does not accept option 'data.rollout.num_sampls'; did you mean "
        "--data.rollout.num_samples? (every option: python -m caopd_pl fit --help)",
    ),
    "bad_value": (
        [*FIT, "--data.rollout.num_samples", "0"],
        None,
        "caopd_pl fit: error: data.rollout.num_samples must be >= 1, got 0",
    ),
    "bad_choice": (
        [*FIT, "--model.loss.divergence", "kl"],
        None,
        "caopd_pl fit: error: model.loss.divergence='kl' is not a registered divergence; choose one of ['reverse', "
        "'forward', 'jsd'] or define a Divergence subclass (its class path names it)",
    ),
    "missing_demonstrations": (
        FIT,
        lambda root: jsonl_task(root, NO_DEMO),
        "caopd_pl fit: error: data.teacher.template='demo' needs a demonstration in every train row, but 4 of 4 train "
        "rows of JsonlTask have no demonstration (first: ['train:0']); add demonstrations to the rows (docs/tasks.md), "
        "or set data.teacher.template: correct_solution and data.teacher.no_correct_rollout: skip",
    ),
    "warm_start_without_demonstrations": (
        FIT,
        lambda root: jsonl_task(root, NO_DEMO, {"template": "correct_solution", "no_correct_rollout": "skip"}),
        "caopd_pl fit: error: model.warm_start trains on demonstrations, but 4 of 4 train rows of JsonlTask have no "
        "demonstration (first: ['train:0']); set model.warm_start: null (a large instruct model that already follows "
        "the answer format needs none), or add demonstrations to the rows (docs/tasks.md)",
    ),
    "stratify_key_missing": (
        [*FIT, "--data.stratify_by", "source"],
        None,
        "caopd_pl fit: error: data.stratify_by='source': 40 of 40 train rows of ArithmeticTask have no meta key "
        "'source' (first: ['1+1:2+0']); the meta keys every train row has: ['level']; set data.stratify_by to one of "
        "them, or null",
    ),
    "completion_cap": (
        [*FIT, "--data.rollout.max_new_tokens", "5"],
        None,
        "caopd_pl fit: error: data.rollout.max_new_tokens=5 is shorter than the confidence line the revision writes "
        "(8 tokens with EOS, before any answer); give at least 8, more for an answer",
    ),
    "tensor_parallel": (
        [*FIT, "--data.rollout.engine", "vllm", "--data.rollout.tensor_parallel_size", "2"],
        None,
        "caopd_pl fit: error: data.rollout.tensor_parallel_size=2 must divide the number of training processes (1); "
        "launch a multiple of it (trainer.devices x trainer.num_nodes), or set it to 1",
    ),
    "report_input": (
        ["report", "--input", "judged.jsonl", "--out", "reports/run1"],
        None,
        "caopd_pl report: error: --input='judged.jsonl': no such file; give a JSONL of judged completions (verify's "
        "output)",
    ),
    "verify_input": (
        ["verify", "--verifier", "math", "--input", "in.jsonl", "--output", "judged.jsonl"],
        None,
        "caopd_pl verify: error: --input='in.jsonl': no such file; give a JSONL with completion and reference per line",
    ),
    "continual_config": (
        ["continual", "--config", "configs/continual/quik.yaml"],
        None,
        "caopd_pl continual: error: --config='configs/continual/quik.yaml': no such file; give a continual YAML such "
        "as configs/continual/quick.yaml",
    ),
    "no_last_checkpoint": (
        [*FIT, "--trainer.default_root_dir", "runs/x", "--ckpt_path", "last"],
        None,
        "caopd_pl fit: error: --ckpt_path=last: no last checkpoint in runs/x/checkpoints; check "
        "trainer.default_root_dir, or leave out --ckpt_path to start a fresh run",
    ),
    "verify_output_is_input": (
        ["verify", "--verifier", "exact", "--input", "in.jsonl", "--output", "./in.jsonl"],
        lambda root: (root / "in.jsonl").write_text('{"completion": "1", "reference": 1}\n'),
        "caopd_pl verify: error: --output='in.jsonl' is the input file (--input='in.jsonl'); writing it would erase "
        "the input: give another path",
    ),
    "damaged_checkpoint": (
        ["export", "--ckpt_path", "model.ckpt", "--out", "exports/model"],
        damaged_checkpoint,
        "caopd_pl export: error: --ckpt_path='model.ckpt' is damaged: its record model/data/0 fails its CRC-32 check "
        "(the file changed after it was written); use another checkpoint (an earlier epoch=*.ckpt of the run) or copy "
        "it again",
    ),
    "non_finite_weights": (
        ["test", "--config", "config.yaml", "--ckpt_path", "diverged.ckpt"],
        diverged_checkpoint,
        "caopd_pl test: error: --ckpt_path='diverged.ckpt': 1 weight tensor(s) hold NaN or infinity (first: "
        "student.lm_head.weight); the run diverged before this checkpoint, or the file was damaged; use another "
        "checkpoint (an earlier epoch=*.ckpt of the run) or copy it again",
    ),
    "resume_changes_the_experiment": (
        [*FIT, "--ckpt_path", "other.ckpt"],
        lambda root: checkpoint(root / "other.ckpt", caopd_config={"data": {"calibration": "none"}}),
        "caopd_pl fit: error: --ckpt_path='other.ckpt' was trained with other settings: data.calibration is 'none' "
        "there, 'empirical' here; resume with the checkpoint's settings, or start a new run (another "
        "trainer.default_root_dir, no --ckpt_path); what a resume may change: docs/errors.md, Resuming",
    ),
    "continual_other_configuration": (
        ["continual", "--config", "continual.yaml", "--out", "runs/c"],
        other_run,
        "caopd_pl continual: error: runs/c/base/state.json was written by a different configuration (seed is 1 "
        "there, 0 here); rerun with that configuration to resume it, or give another --out (or delete runs/c/base) "
        "to start afresh",
    ),
    "missing_checkpoint": (
        [*FIT, "--ckpt_path", "runs/x/checkpoints/last.ckpt"],
        None,
        "caopd_pl fit: error: --ckpt_path='runs/x/checkpoints/last.ckpt': no such file; give a .ckpt file written by "
        "fit, or 'last'",
    ),
}


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    small_config(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CAOPD_PL_TRACEBACK", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    return tmp_path


@pytest.mark.parametrize("case", sorted(ROWS))
def test_bad_input_prints_the_documented_line(case, run_dir, capsys, monkeypatch):
    args, prepare, expected = ROWS[case]
    if prepare is not None:
        prepare(run_dir)
    if case == "model_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case == "model_unreachable":
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.perf_counter()
    status = main(args)
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1:] == [expected] and not any("Traceback" in line for line in err)
    assert elapsed < 30, f"{case} took {elapsed:.0f} s"  # no network wait; the limit is for a busy CI machine
    assert not (run_dir / "logs").exists(), "a failed start-up leaves no log folder behind"
    assert f"`{expected}`" in DOC.read_text(), f"docs/errors.md does not show the line of {case}"


def test_traceback_on_request(run_dir, monkeypatch):
    monkeypatch.setenv("CAOPD_PL_TRACEBACK", "1")
    with pytest.raises(ValueError, match="must be >= 1"):
        main(["fit", "--config", "config.yaml", "--data.rollout.num_samples", "0"])


def test_an_epoch_without_examples_is_skipped_not_a_crash(run_dir, capsys):
    # The untrained tiny model never writes "7777777": with correct_solution + skip every prompt is skipped.
    rows = [{"prompt": f"{i}+{7777777 - i}=?", "answer": "7777777"} for i in range(4)]
    jsonl_task(run_dir, rows, {"template": "correct_solution", "no_correct_rollout": "skip"}, warm_start=False)
    assert main(["fit", "--config", "config.yaml"]) == 0
    out = capsys.readouterr().out
    for epoch in (0, 1):
        assert f"epoch {epoch}: no distillation examples (4 prompts skipped); no training this epoch" in out
    logged = [row for row in metrics_rows(run_dir) if row.get("rollout/examples")]
    assert [float(row["rollout/examples"]) for row in logged] == [0.0, 0.0]  # both epochs ran their hooks


def test_docs_table_has_a_row_per_case():
    text = DOC.read_text()
    assert text.count("\n| ") - 1 == len(ROWS), "one table row (plus the header) per case of ROWS"


def test_docs_list_what_a_resume_may_change():
    from caopd_pl.resume import RESUME_MAY_CHANGE

    section = DOC.read_text().partition("## Resuming")[2]
    missing = [key for key in RESUME_MAY_CHANGE if f"`{key}`" not in section]
    assert not missing, f"docs/errors.md, Resuming, does not list {missing}"


def test_cached_hub_name_needs_no_network(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from caopd_pl.errors import UsageError
    from caopd_pl.models.source import check_model_source

    repo = tmp_path / "models--org--cached"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_model_source("org/cached")  # in the cache: used as is, offline
    check_model_source(str(tmp_path))  # an existing directory
    with pytest.raises(UsageError, match="is a file; give the checkpoint's directory"):
        check_model_source(str(repo / "refs" / "main"))
    with pytest.raises(UsageError, match="is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        check_model_source("org/uncached")


def test_a_name_the_hub_does_not_know_fails_in_one_line(run_dir, capsys, monkeypatch):
    import http.server
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # what the hub answers for an unknown repo id
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    try:
        assert main(["fit", "--config", "config.yaml", "--model.model.name_or_path", "Qwen/Qwen3-0.6Bb"]) == 2
    finally:
        server.shutdown()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"caopd_pl fit: error: model.model.name_or_path='Qwen/Qwen3-0.6Bb': no such model on {endpoint} (or a "
        "private one: log in with hf auth login); check the name, or give a local checkpoint directory"
    )
