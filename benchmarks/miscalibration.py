"""Reproduce the paper's effect on the embedded default: base vs SDFT vs CaOPD (and the RL baselines), side by side.

For each seed: warm-start the tiny model once (supervised, every demonstration ends in ``Confidence: 1.00``); from
that same checkpoint train each of ``--methods`` (:mod:`caopd_pl.methods`: SDFT ``calibration: none``, CaOPD
``calibration: empirical``, RLVR and RLCR by GRPO with ``data.rl.reward``) with the same seeds, prompts, rollouts
per prompt and epochs (the same rollout budget); evaluate the warm start ("base") and each by greedy decoding on the
held-out ``test``
split and the shifted ``ood`` split (longer operands and a level never trained), reading each answer's confidence
with every readout of :mod:`caopd_pl.readouts` (``greedy``: the stated value; ``expected``: its expectation under the
model given the answer; ``sampled``: the mean over ``--samples`` sampled completions). Everything else comes from
the config (default ``configs/quickstart.yaml``).

    python benchmarks/miscalibration.py --out runs/miscalibration --seeds 0 1 2 --readout expected
    python benchmarks/miscalibration.py --out runs/miscalibration --methods base sdft caopd rlvr rlcr

Writes ``DIR/summary.json`` ({method: {split: {metric: mean}}} for the ``--readout`` readout, with ``_std`` and
per-seed values beside, and {method: {split: {"by_readout": {readout: {metric: ...}}}}} for all three),
``DIR/levels.json`` (accuracy and mean confidence per difficulty level and readout, pooled over seeds),
``DIR/confidence_vs_accuracy.png`` (every method and readout), ``DIR/reliability.png`` (methods x readouts),
``DIR/run.json`` (the primary readout, the setting, the wall-clock seconds this invocation spent per seed) and
prints Markdown tables;
``summary.json`` and ``levels.json`` are also kept in ``DIR/<setting>/`` (e.g. ``k4_ecfg_beta_1_1``), so runs that
differ only in K, epochs, estimator, stratification or overrides can share one ``DIR`` and its warm starts. A
finished piece (a warm start, a trained method, an evaluation) is kept under ``DIR/seed_<s>_<config digest>/`` and
reused when the command is run again with the same config file content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from caopd_pl import pipeline
from caopd_pl.files import atomic_save_dir, atomic_write_text, read_jsonl, write_jsonl
from caopd_pl.methods import METHODS, method_override
from caopd_pl.metrics import answer_tensors
from caopd_pl.plots import confidence_vs_accuracy, reliability_matrix
from caopd_pl.readouts import READOUTS, summaries_by_readout, with_readout

BASE = "base"
"""The warm start: evaluated as it is, trained by no method."""
DEFAULT_METHODS = [BASE, "sdft", "caopd"]
SPLITS = ("test", "ood")
KEYS = ("accuracy", "mean_confidence", "ece", "brier", "spr", "ocg", "auroc", "format_adherence")
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


def build(config: str, root: Path, overrides: list[dict[str, Any]], args: list[str]) -> pipeline.Experiment:
    """A configured (module, datamodule, trainer) from the config, writing under ``root``.

    The benchmark saves the models it needs itself: no Lightning checkpoints, none of the config's callbacks, and a
    CSV logger under ``root`` whatever logger the config names.
    """
    logger = {"class_path": CSV_LOGGER, "init_args": {"save_dir": str(root)}}
    own = {"trainer": {"enable_checkpointing": False, "callbacks": [], "logger": logger}}
    return pipeline.build(config, root, [own, *overrides], args)


def warm_start(config: str, root: Path, seed: int, layers: list[dict] = (), tiny: bool = True) -> Path:
    """Warm-start the model of ``seed`` and save it as a Hugging Face checkpoint (skipped when it exists).

    ``layers`` are overrides laid over the config in every build (a task chosen on the command line); ``tiny`` seeds
    the built-in tiny model's initialisation too (a pretrained model has its own weights).
    """
    out = root / "base"
    if (out / "config.json").exists():
        return out
    seeds: dict = {"model": {"warm_start": {"seed": seed}}}
    if tiny:
        seeds["model"]["model"] = {"tiny": {"seed": seed}}
    experiment = build(config, root / "warm", [*layers, seeds], [])
    started = time.perf_counter()
    losses = pipeline.warm_start(experiment, seed=seed)
    seconds = time.perf_counter() - started
    window = max(1, min(50, len(losses) // 4))  # the first and last quarter of a short warm start
    head, tail = statistics.fmean(losses[:window]), statistics.fmean(losses[-window:])
    print(f"warm start seed {seed}: {len(losses)} steps in {seconds:.0f} s, loss {head:.3f} -> {tail:.3f}")

    def save(folder: Path) -> None:
        pipeline.save_student(experiment, folder)
        atomic_write_text(folder / "warm_start_losses.json", json.dumps(losses))
        atomic_write_text(folder / "warm_start_seconds.json", json.dumps(round(seconds, 1)))

    atomic_save_dir(out, save)
    return out


def train(
    config: str, root: Path, base: Path, method: str, seed: int, extra: list[dict], args: list[str], layers=()
) -> Path:
    """Train ``method`` (:data:`caopd_pl.methods.METHODS`) from ``base``; returns the saved student (skipped when it
    exists)."""
    out = root / method
    if (out / "model" / "config.json").exists():
        return out / "model"
    seeds = {"data": {"seed": seed, "rollout": {"seed": seed}}, "seed_everything": seed}
    overrides = [*layers, pipeline.starting_from(base), method_override(method), seeds, *extra]
    experiment = build(config, out, overrides, args)
    pipeline.distil(experiment)
    atomic_save_dir(out / "model", lambda folder: pipeline.save_student(experiment, folder))
    return out / "model"


def evaluate(
    config: str, root: Path, model: Path, name: str, split: str, samples: int = 8, layers: list[dict] = ()
) -> list[dict]:
    """Greedy answers of ``model`` on ``split`` with every confidence readout (cached as JSONL).

    ``samples`` completions per prompt make the ``sampled`` readout (temperature 1, seeded).
    """
    path = root / "eval" / f"{name}_{split}_readouts_n{samples}.jsonl"
    if path.exists():
        return read_jsonl(path)
    readout = {"primary": "greedy", "report": list(READOUTS), "num_samples": samples, "temperature": 1.0}
    evaluation = [pipeline.starting_from(model), {"data": {"test_split": split}, "model": {"readout": readout}}]
    records = pipeline.evaluate(build(config, root / "eval" / name, [*layers, *evaluation], []))
    write_jsonl(path, records)
    return records


def summarize(records: list[dict], readout: str) -> dict:
    """The ``readout`` readout's metrics, and every readout's under ``by_readout``."""
    by_readout = summaries_by_readout(records, READOUTS)
    return {**by_readout[readout], "by_readout": by_readout}


def by_level(records: list[dict], readout: str | None = None) -> dict[str, dict[str, float]]:
    """{level: {n, accuracy, mean_confidence}} for records that carry a ``level`` (the arithmetic task's do).

    ``mean_confidence`` is the ``readout`` readout's (None: the records' ``confidence``).
    """
    if readout is not None:
        records = with_readout(records, readout)
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(str(record.get("level", "all")), []).append(record)
    return {
        level: {
            "n": len(group),
            "accuracy": statistics.fmean(float(r["correct"]) for r in group),
            "mean_confidence": statistics.fmean(r["confidence"] for r in group),
        }
        for level, group in sorted(groups.items())
    }


def aggregate(per_seed: list[dict]) -> dict:
    """{method: {split: {key: mean, key_std: std, key_seeds: [...]}}} over seeds, and the same under ``by_readout``
    for cells that have one."""
    out: dict = {}
    for method in per_seed[0]:
        for split in SPLITS:
            cells = [seed[method][split] for seed in per_seed]
            out.setdefault(method, {})[split] = _mean_cell(cells)
            if "by_readout" in cells[0]:
                out[method][split]["by_readout"] = {
                    name: _mean_cell([cell["by_readout"][name] for cell in cells]) for name in cells[0]["by_readout"]
                }
    return out


def _mean_cell(cells: list[dict]) -> dict:
    out = {}
    for key in KEYS:
        values = [cell[key] for cell in cells]
        finite = [v for v in values if not math.isnan(v)]
        out[key] = statistics.fmean(finite) if finite else None
        out[f"{key}_std"] = statistics.pstdev(finite) if len(finite) > 1 else 0.0
        out[f"{key}_seeds"] = [None if math.isnan(v) else v for v in values]
    return out


def _value(cell: dict, key: str, seeds: int) -> str:
    if cell[key] is None:
        return "n/a"
    return f"{cell[key]:.3f}" + (f" ± {cell[key + '_std']:.3f}" if seeds > 1 else "")


def markdown(summary: dict, seeds: int) -> str:
    lines = [f"| method | split | {' | '.join(KEYS)} |", "|---|---|" + "---|" * len(KEYS)]
    for method, splits in summary.items():
        for split, cell in splits.items():
            lines.append(f"| {method} | {split} | {' | '.join(_value(cell, k, seeds) for k in KEYS)} |")
    return "\n".join(lines)


READOUT_KEYS = ("mean_confidence", "ece", "brier", "spr", "auroc")


def readout_markdown(summary: dict, seeds: int) -> str:
    """Every readout's confidence metrics side by side (accuracy is the greedy answer's: one per method)."""
    lines = [f"| method | split | readout | {' | '.join(READOUT_KEYS)} |", "|---|---|---|" + "---|" * len(READOUT_KEYS)]
    for method, splits in summary.items():
        for split, cell in splits.items():
            for name, sub in cell.get("by_readout", {}).items():
                values = " | ".join(_value(sub, k, seeds) for k in READOUT_KEYS)
                lines.append(f"| {method} | {split} | {name} | {values} |")
    return "\n".join(lines)


def level_markdown(levels: dict, split: str) -> str:
    """Accuracy / mean confidence per level and method, pooled over seeds."""
    methods = list(levels)
    names = sorted({level for m in methods for level in levels[m][split]})
    lines = [f"| level | {' | '.join(methods)} |", "|---|" + "---|" * len(methods)]
    for level in names:
        cells = []
        for method in methods:
            cell = levels[method][split].get(level)
            cells.append("" if cell is None else f"{cell['accuracy']:.2f} / {cell['mean_confidence']:.2f}")
        lines.append(f"| {level} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def add_arguments(parser: argparse.ArgumentParser, config: str) -> None:
    """The options every comparison of methods takes (this benchmark's and ``real_model.py``'s)."""
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--config", default=config)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--k", type=int, default=None, help="rollouts per prompt (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the config's)")
    parser.add_argument("--estimator", choices=["empirical", "beta"], default="empirical")
    parser.add_argument("--prior", type=float, nargs=2, default=(1.0, 1.0), metavar=("ALPHA", "BETA"))
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=[BASE, *METHODS],
        default=DEFAULT_METHODS,
        help="what to compare, every trained method from the same warm start with the same rollout budget (prompts x "
        "K per epoch, epochs): base (the warm start), sdft, caopd, rlvr, rlcr",
    )
    parser.add_argument(
        "--readout",
        choices=READOUTS,
        default="expected",
        help="the primary confidence readout of summary.json's top-level metrics (all three are in by_readout)",
    )
    parser.add_argument("--samples", type=int, default=8, help="sampled completions per prompt (sampled readout)")
    parser.add_argument(
        "--stratify",
        metavar="KEY",
        default=None,
        help="sample each epoch's training prompts evenly over this task-example key (data.stratify_by, e.g. level)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra fit option for every trained method's run, CLI syntax (e.g. --override=--model.ema_rate=0.002); "
        "its results are kept apart from other settings' under DIR/seed_<s>_<config>/<setting>_<digest>/; a "
        "--data.rl.* option would make the distillation methods RL too: use --model.policy_loss.* for GRPO",
    )


def setting(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The overrides of the distillation runs and the name of the setting they make (a folder name)."""
    estimator = {"kind": args.estimator, "prior_alpha": args.prior[0], "prior_beta": args.prior[1]}
    extra = [{"data": {"estimator": estimator}}]
    extra += [{"data": {"rollout": {"num_samples": args.k}}}] if args.k else []
    extra += [{"trainer": {"max_epochs": args.epochs}}] if args.epochs else []
    extra += [{"data": {"stratify_by": args.stratify}}] if args.stratify else []
    tag = f"k{args.k or 'cfg'}_e{args.epochs or 'cfg'}_{args.estimator}" + (
        f"_{args.prior[0]:g}_{args.prior[1]:g}" if args.estimator == "beta" else ""
    )
    tag += f"_strat-{args.stratify}" if args.stratify else ""
    if args.override:  # a short digest keeps settings apart without spelling every override into a folder name
        tag += "_" + _digest("\n".join(args.override))
    return extra, tag


def compare(args: argparse.Namespace, layers: list[dict] = (), tiny: bool = True, notes: dict | None = None) -> None:
    """Base vs the ``--methods`` on every seed; writes and prints the results (see the module docstring).

    Args:
        args: the options of :func:`add_arguments`.
        layers: overrides laid over the config in every build (a task chosen on the command line).
        tiny: seed the tiny model's initialisation with each seed (the embedded default's warm start).
        notes: extra entries for ``run.json`` (the task a real-model run used).
    """
    extra, tag = setting(args)
    # Cached pieces live under a folder named by the config's content (and the layers over it), so editing either
    # never reuses stale ones.
    config_digest = _digest(Path(args.config).read_text() + (json.dumps(layers, sort_keys=True) if layers else ""))
    per_seed, pooled, timing = [], {}, {}
    for seed in args.seeds:
        started = time.perf_counter()
        root = args.out / f"seed_{seed}_{config_digest}"
        base = warm_start(args.config, root, seed, layers, tiny)
        trained = [m for m in args.methods if m != BASE]
        models = {BASE: base} if BASE in args.methods else {}
        models |= {m: train(args.config, root / tag, base, m, seed, extra, args.override, layers) for m in trained}
        results = {}
        for name, model in models.items():
            for split in SPLITS:
                eval_root = root if name == BASE else root / tag
                records = evaluate(args.config, eval_root, model, name, split, args.samples, layers)
                results.setdefault(name, {})[split] = summarize(records, args.readout)
                pooled.setdefault(name, {}).setdefault(split, []).extend(records)
        per_seed.append(results)
        timing[seed] = round(time.perf_counter() - started, 1)  # cached pieces cost nothing: see the docstring
        print(f"seed {seed}: {timing[seed]:.0f} s wall-clock in this invocation")
    report(args, tag, per_seed, pooled, {"seconds_per_seed": timing, **(notes or {})})


def report(args: argparse.Namespace, tag: str, per_seed: list[dict], pooled: dict, notes: dict) -> None:
    """Write summary.json, levels.json, run.json and the figures; print the tables."""
    summary = aggregate(per_seed)
    levels = {m: {split: {r: by_level(pooled[m][split], r) for r in READOUTS} for split in SPLITS} for m in pooled}
    # DIR/ holds the latest invocation's results; DIR/<tag>/ keeps each setting's, so studies can share warm starts.
    for folder in (args.out, args.out / tag):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(folder / "levels.json", json.dumps(levels, indent=2) + "\n")
    run = {"readout": args.readout, "setting": tag, "seeds": args.seeds, "samples": args.samples, **notes}
    atomic_write_text(args.out / "run.json", json.dumps(run, indent=2) + "\n")
    points = {
        m: {r: (cells["test"]["accuracy"], cells["test"]["by_readout"][r]["mean_confidence"]) for r in READOUTS}
        for m, cells in summary.items()
    }
    confidence_vs_accuracy(points, args.out / "confidence_vs_accuracy.png")
    panels = {m: {r: answer_tensors(with_readout(pooled[m]["test"], r))[:2] for r in READOUTS} for m in pooled}
    reliability_matrix(panels, args.out / "reliability.png")
    print(f"\n{len(args.seeds)} seed(s), {tag}; mean ± std over seeds; primary readout: {args.readout}\n")
    print(markdown(summary, len(args.seeds)))
    print("\nevery readout (accuracy as above)\n")
    print(readout_markdown(summary, len(args.seeds)))
    print(f"\nper level, test split, pooled over seeds: accuracy / mean confidence ({args.readout} readout)\n")
    print(level_markdown({m: {s: levels[m][s][args.readout] for s in SPLITS} for m in levels}, "test"))
    print(f"\nwrote {args.out / 'summary.json'}, levels.json, run.json, confidence_vs_accuracy.png, reliability.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, "configs/quickstart.yaml")
    compare(parser.parse_args())


if __name__ == "__main__":
    main()
