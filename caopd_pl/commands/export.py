"""``python -m caopd_pl export``: write a trained student (or its EMA teacher) as a Hugging Face model directory.

The directory holds the weights (safetensors), the model config, the tokenizer with its chat template and a
``generation_config``; ``AutoModelForCausalLM.from_pretrained``, ``AutoTokenizer`` and vLLM load it as it is.

The checkpoint is checked first (:mod:`caopd_pl.checkpoints`): a record that fails its checksum, or a weight that is
NaN or infinite, stops the export in one line (exit status 2) before anything is written.

The checkpoint holds the module's hyper-parameters (``save_hyperparameters``) and both models' weights, but not the
architecture config or the tokenizer: the module is rebuilt from its hyper-parameters (the tiny model in code, a real
one from ``model.model.name_or_path``), then the weights are loaded into it. A base model that moved since training
is given with ``--base`` (the same base model: the weights are replaced anyway); ``--config`` applies a run config's
``model:`` section first (any of its keys override the checkpoint's).

A LoRA checkpoint (``model.lora``) holds the base and both adapters; the exported model is the base with the
student's adapter (``--teacher``: the teacher's) merged in, a plain model without peft layers.

The ``generation_config`` is the decoding the model was evaluated with: ``eos_token_id`` the ids training stopped
rollouts on (the tokenizer's EOS, then the checkpoint's EOS ids), so every engine ends a completion where training
did; greedy (``do_sample: false``) when ``model.eval_temperature`` is 0, the default, else sampling at that
temperature with no top-k, top-p or penalty; ``max_new_tokens`` ``model.eval_max_new_tokens``. A base instruct
model's own sampling defaults (temperature 0.6, top-k 20 ...), which training and evaluation ignore, are dropped: a
plain ``generate()`` of the export answers as the evaluated model did, and its stated confidences are the evaluated
ones. Deployers who want another decoding set it themselves.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import typing
from pathlib import Path
from typing import Any

import yaml

from caopd_pl.errors import UsageError
from caopd_pl.files import save_into_dir

DTYPE_NAMES = ("bfloat16", "float16", "float32")  # caopd_pl.models.loading.DTYPES, without importing torch for --help


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m caopd_pl export``; returns the exit status.

    Raises:
        UsageError: bad input (``python -m caopd_pl`` prints it as one line and exits with status 2).
    """
    parser = argparse.ArgumentParser(
        prog="python -m caopd_pl export", description=__doc__.split("\n\n")[1], allow_abbrev=False
    )
    parser.add_argument("--ckpt_path", required=True, help="Lightning checkpoint written by fit (e.g. last.ckpt)")
    parser.add_argument("--out", required=True, help="directory to write the Hugging Face model into")
    parser.add_argument("--teacher", action="store_true", help="export the EMA teacher instead of the student")
    parser.add_argument("--config", help="run config whose model: section overrides the checkpoint's")
    parser.add_argument("--base", help="base model (hub name or local dir) replacing model.model.name_or_path")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="cast the weights (default: the dtype trained in)")
    args = parser.parse_args(argv)
    out = export(
        Path(args.ckpt_path), Path(args.out), teacher=args.teacher, config=args.config, base=args.base, dtype=args.dtype
    )
    print(f"wrote the {'teacher' if args.teacher else 'student'} of {args.ckpt_path} to {out}")
    return 0


def export(
    ckpt_path: Path,
    out: Path,
    teacher: bool = False,
    config: str | None = None,
    base: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write the checkpoint's student (or teacher) and tokenizer to ``out``; returns ``out``.

    Args:
        ckpt_path: checkpoint written by fit.
        out: directory to write (created).
        teacher: export the EMA teacher instead of the student.
        config: run config whose ``model:`` section overrides the checkpoint's hyper-parameters.
        base: base model replacing ``model.model.name_or_path`` (one that moved since training).
        dtype: ``float32``, ``bfloat16`` or ``float16`` to cast the weights to; None keeps the trained dtype.

    Raises:
        UsageError: the checkpoint or config is missing or unreadable, the checkpoint is damaged (a record fails its
            checksum) or holds non-finite weights, or the base model cannot be found.
    """
    import torch

    checkpoint = _read_checkpoint(ckpt_path)
    hparams = _hyper_parameters(checkpoint, ckpt_path, config, base)
    module = _rebuild_module(hparams, ckpt_path)
    module.load_state_dict(checkpoint["state_dict"])
    model = _exported_model(module, teacher)
    if dtype is not None:
        model.to(dtype=getattr(torch, dtype))
    model.generation_config = _generation_config(
        model, module.tokenizer, module.eval_temperature, module.eval_max_new_tokens
    )

    def save(folder: Path) -> None:
        model.save_pretrained(folder)
        module.tokenizer.save_pretrained(folder)

    save_into_dir(out, save)  # each file whole, readable by others (safetensors writes 0600); a failure writes none
    return out


def _exported_model(module: Any, teacher: bool) -> Any:
    """The student (or teacher) as a plain transformers model: with LoRA, its adapter merged into the base."""
    if module.lora is None:
        return module.teacher if teacher else module.student
    from caopd_pl.models.lora import STUDENT, TEACHER, merge_adapter

    return merge_adapter(module.student, TEACHER if teacher else STUDENT)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint, whole and with finite weights (:func:`caopd_pl.checkpoints.read_checkpoint`)."""
    from caopd_pl.checkpoints import read_checkpoint  # imports torch: ``export --help`` stays fast

    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise UsageError(f"--ckpt_path={str(path)!r} is not a CaOPD checkpoint (no state_dict or hyper_parameters)")
    return checkpoint


def _hyper_parameters(
    checkpoint: dict[str, Any], ckpt_path: Path, config: str | None, base: str | None
) -> dict[str, Any]:
    """The module's constructor arguments: the checkpoint's, then the config's ``model:`` keys, then ``--base``."""
    hparams = {key: _as_dict(value) for key, value in checkpoint["hyper_parameters"].items()}
    if config is not None:
        # The optimizer and scheduler are not hyper-parameters of a checkpoint (nor needed to export one).
        overrides = {k: v for k, v in _model_section(config).items() if k not in ("optimizer", "scheduler")}
        for key, value in overrides.items():
            hparams[key] = {**hparams.get(key, {}), **value} if isinstance(value, dict) else value
    if base is not None:
        hparams["model"] = {**hparams.get("model", {}), "name_or_path": base}
    name = hparams.get("model", {}).get("name_or_path", "tiny")
    if _looks_local(name) and not Path(name).exists():
        flag = "--base" if base is not None else "model.model.name_or_path (saved in the checkpoint)"
        raise UsageError(
            f"{flag}={name!r} does not exist; pass --base with the base model {ckpt_path.name} was trained from"
        )
    return hparams


def _as_dict(value: Any) -> Any:
    # A checkpoint written through the Python API holds the dataclasses themselves; the CLI's holds dicts.
    if hasattr(value, "__dataclass_fields__"):
        return {name: _as_dict(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def _model_section(config: str) -> dict[str, Any]:
    path = Path(config)
    if not path.is_file():
        raise UsageError(f"--config={config!r} does not exist; give the run's config.yaml")
    section = (yaml.safe_load(path.read_text()) or {}).get("model", {})
    if not isinstance(section, dict):
        raise UsageError(f"--config={config!r}: its model: section must be a mapping of the module's arguments")
    return section


def _looks_local(name: str) -> bool:
    # Hub ids are "org/name"; anything absolute, relative-dotted or with more than one slash is a path.
    return name != "tiny" and (Path(name).is_absolute() or name.startswith(".") or name.count("/") != 1)


def _rebuild_module(hparams: dict[str, Any], ckpt_path: Path):
    from caopd_pl.module import CaOPDModule

    hparams = dict(hparams)
    instantiator = hparams.pop("_instantiator", None)
    try:
        if instantiator is None:  # written through the Python API: the settings' dataclasses, made dicts above
            return CaOPDModule(**_settings(CaOPDModule.__init__, hparams))
        module_name, _, function = instantiator.rpartition(".")
        return getattr(importlib.import_module(module_name), function)(CaOPDModule, hparams)
    except OSError as err:  # transformers: a hub name that is not there (or no network)
        name = hparams.get("model", {}).get("name_or_path")
        raise UsageError(
            f"model.model.name_or_path={name!r} cannot be loaded ({str(err).splitlines()[0]}); pass --base with the "
            f"base model {ckpt_path.name} was trained from"
        ) from err


def _settings(function: Any, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each dict rebuilt as the dataclass ``function``'s signature names for it (nested too)."""
    hints = typing.get_type_hints(function)
    return {key: _rebuild(hints.get(key), value) for key, value in values.items()}


def _rebuild(annotation: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    # ``Settings | None`` and the like: the one dataclass among the alternatives.
    candidates = [annotation, *typing.get_args(annotation)]
    cls = next((c for c in candidates if dataclasses.is_dataclass(c)), None)
    if cls is None:
        return value
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{key: _rebuild(hints.get(key), item) for key, item in value.items() if key in fields})


def _generation_config(model: Any, tokenizer: Any, temperature: float, max_new_tokens: int):
    """The evaluated decoding (see the module docstring): greedy at temperature 0, else plain sampling at it."""
    from transformers import GenerationConfig

    from caopd_pl.rollout.base import stop_token_ids

    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {}
    return GenerationConfig(
        bos_token_id=model.generation_config.bos_token_id,
        eos_token_id=stop_token_ids(tokenizer, model.generation_config),
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=max_new_tokens,
        **sampling,
    )
