"""Reproduce the paper's effect on the embedded default: base vs SDFT vs CaOPD, side by side.

For each seed: warm-start the tiny model once (supervised, every demonstration ends in ``Confidence: 1.00``); from
that same checkpoint train SDFT (``calibration: none``) and CaOPD (``calibration: empirical``) with the same seeds,
rollouts and steps; evaluate the warm start ("base"), SDFT and CaOPD by greedy decoding on the held-out ``test``
split and the shifted ``ood`` split (longer operands and a level never trained). Everything else comes from the
config (default ``configs/quickstart.yaml``).

    python benchmarks/miscalibration.py --out runs/miscalibration --seeds 0 1 2

Writes ``DIR/summary.json`` ({method: {split: {metric: mean}}}, with ``_std`` and per-seed values beside),
``DIR/levels.json`` (accuracy and mean stated confidence per difficulty level, pooled over seeds),
``DIR/confidence_vs_accuracy.png``, ``DIR/reliability.png`` and prints a Markdown table; ``summary.json`` and
``levels.json`` are also kept in ``DIR/<setting>/`` (e.g. ``k4_ecfg_beta_1_1``), so runs that differ only in
K, epochs, estimator or overrides can share one ``DIR`` and its warm starts. A finished piece (a warm start, a
trained method, an evaluation) is kept under ``DIR/seed_<s>_<config digest>/`` and reused when the command is run
again with the same config file content.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
from pathlib import Path
from typing import Any

from caopd_pl import pipeline
from caopd_pl.files import atomic_save_dir, atomic_write_text, read_jsonl, write_jsonl
from caopd_pl.metrics import answer_tensors, calibration_summary
from caopd_pl.plots import confidence_vs_accuracy, reliability_grid

METHODS = {"sdft": "none", "caopd": "empirical"}
SPLITS = ("test", "ood")
KEYS = ("accuracy", "mean_confidence", "ece", "brier", "spr", "ocg", "auroc")
CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"


def build(config: str, root: Path, overrides: list[dict[str, Any]], args: list[str]) -> pipeline.Experiment:
    """A configured (module, datamodule, trainer) from the config, writing under ``root``.

    The benchmark saves the models it needs itself: no Lightning checkpoints, none of the config's callbacks, and a
    CSV logger under ``root`` whatever logger the config names.
    """
    logger = {"class_path": CSV_LOGGER, "init_args": {"save_dir": str(root)}}
    own = {"trainer": {"enable_checkpointing": False, "callbacks": [], "logger": logger}}
    return pipeline.build(config, root, [own, *overrides], args)


def warm_start(config: str, root: Path, seed: int) -> Path:
    """Warm-start the tiny model of ``seed`` and save it as a Hugging Face checkpoint (skipped when it exists)."""
    out = root / "base"
    if (out / "config.json").exists():
        return out
    seeds = {"model": {"model": {"tiny": {"seed": seed}}, "warm_start": {"seed": seed}}}
    experiment = build(config, root / "warm", [seeds], [])
    losses = pipeline.warm_start(experiment, seed=seed)
    print(f"warm start seed {seed}: loss {statistics.fmean(losses[:50]):.3f} -> {statistics.fmean(losses[-50:]):.3f}")

    def save(folder: Path) -> None:
        pipeline.save_student(experiment, folder)
        atomic_write_text(folder / "warm_start_losses.json", json.dumps(losses))

    atomic_save_dir(out, save)
    return out


def train(config: str, root: Path, base: Path, method: str, seed: int, extra: list[dict], args: list[str]) -> Path:
    """Distil from ``base`` with ``method``'s calibration; returns the saved student (skipped when it exists)."""
    out = root / method
    if (out / "model" / "config.json").exists():
        return out / "model"
    seeds = {"data": {"calibration": METHODS[method], "seed": seed, "rollout": {"seed": seed}}, "seed_everything": seed}
    experiment = build(config, out, [pipeline.starting_from(base), seeds, *extra], args)
    pipeline.distil(experiment)
    atomic_save_dir(out / "model", lambda folder: pipeline.save_student(experiment, folder))
    return out / "model"


def evaluate(config: str, root: Path, model: Path, name: str, split: str) -> list[dict]:
    """Greedy answers of ``model`` on ``split`` (cached as JSONL)."""
    path = root / "eval" / f"{name}_{split}.jsonl"
    if path.exists():
        return read_jsonl(path)
    layers = [pipeline.starting_from(model), {"data": {"test_split": split}}]
    records = pipeline.evaluate(build(config, root / "eval" / name, layers, []))
    write_jsonl(path, records)
    return records


def summarize(records: list[dict]) -> dict[str, float]:
    return calibration_summary(*answer_tensors(records))


def by_level(records: list[dict]) -> dict[str, dict[str, float]]:
    """{level: {n, accuracy, mean_confidence}} for records that carry a ``level`` (the arithmetic task's do)."""
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
    """{method: {split: {key: mean, key_std: std, key_seeds: [...]}}} over seeds."""
    out: dict = {}
    for method in per_seed[0]:
        for split in SPLITS:
            cell = out.setdefault(method, {}).setdefault(split, {})
            for key in KEYS:
                values = [seed[method][split][key] for seed in per_seed]
                finite = [v for v in values if not math.isnan(v)]
                cell[key] = statistics.fmean(finite) if finite else None
                cell[f"{key}_std"] = statistics.pstdev(finite) if len(finite) > 1 else 0.0
                cell[f"{key}_seeds"] = [None if math.isnan(v) else v for v in values]
    return out


def markdown(summary: dict, seeds: int) -> str:
    lines = [f"| method | split | {' | '.join(KEYS)} |", "|---|---|" + "---|" * len(KEYS)]
    for method, splits in summary.items():
        for split, cell in splits.items():
            values = [
                "n/a" if cell[k] is None else (f"{cell[k]:.3f}" + (f" ± {cell[k + '_std']:.3f}" if seeds > 1 else ""))
                for k in KEYS
            ]
            lines.append(f"| {method} | {split} | {' | '.join(values)} |")
    return "\n".join(lines)


def level_markdown(levels: dict, split: str) -> str:
    """Accuracy / mean stated confidence per level and method, pooled over seeds."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--k", type=int, default=None, help="rollouts per prompt (default: the config's)")
    parser.add_argument("--epochs", type=int, default=None, help="distillation epochs (default: the config's)")
    parser.add_argument("--estimator", choices=["empirical", "beta"], default="empirical")
    parser.add_argument("--prior", type=float, nargs=2, default=(1.0, 1.0), metavar=("ALPHA", "BETA"))
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra fit option for the SDFT/CaOPD runs, CLI syntax (e.g. --override=--model.ema_rate=0.002); "
        "its results are kept apart from other settings' under DIR/seed_<s>_<config>/<setting>_<digest>/",
    )
    args = parser.parse_args()

    estimator = {"kind": args.estimator, "prior_alpha": args.prior[0], "prior_beta": args.prior[1]}
    extra = [{"data": {"estimator": estimator}}]
    extra += [{"data": {"rollout": {"num_samples": args.k}}}] if args.k else []
    extra += [{"trainer": {"max_epochs": args.epochs}}] if args.epochs else []
    tag = f"k{args.k or 'cfg'}_e{args.epochs or 'cfg'}_{args.estimator}" + (
        f"_{args.prior[0]:g}_{args.prior[1]:g}" if args.estimator == "beta" else ""
    )
    if args.override:  # a short digest keeps settings apart without spelling every override into a folder name
        tag += "_" + _digest("\n".join(args.override))
    # Cached pieces live under a folder named by the config's content, so editing the config never reuses stale ones.
    config_digest = _digest(Path(args.config).read_text())
    per_seed, pooled = [], {}
    for seed in args.seeds:
        root = args.out / f"seed_{seed}_{config_digest}"
        base = warm_start(args.config, root, seed)
        models = {"base": base}
        models |= {m: train(args.config, root / tag, base, m, seed, extra, args.override) for m in args.methods}
        results = {}
        for name, model in models.items():
            for split in SPLITS:
                eval_root = root if name == "base" else root / tag
                records = evaluate(args.config, eval_root, model, name, split)
                results.setdefault(name, {})[split] = summarize(records)
                pooled.setdefault(name, {}).setdefault(split, []).extend(records)
        per_seed.append(results)

    summary = aggregate(per_seed)
    levels = {m: {split: by_level(pooled[m][split]) for split in SPLITS} for m in pooled}
    # DIR/ holds the latest invocation's results; DIR/<tag>/ keeps each setting's, so studies can share warm starts.
    for folder in (args.out, args.out / tag):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (folder / "levels.json").write_text(json.dumps(levels, indent=2) + "\n")
    confidence_vs_accuracy(
        {m: (summary[m]["test"]["accuracy"], summary[m]["test"]["mean_confidence"]) for m in summary},
        args.out / "confidence_vs_accuracy.png",
    )
    reliability_grid({m: answer_tensors(pooled[m]["test"])[:2] for m in pooled}, args.out / "reliability.png")
    print(f"\n{len(args.seeds)} seed(s), {tag}; mean ± std over seeds\n")
    print(markdown(summary, len(args.seeds)))
    print("\nper level, test split, pooled over seeds: accuracy / mean stated confidence\n")
    print(level_markdown(levels, "test"))
    print(f"\nwrote {args.out / 'summary.json'}, levels.json, confidence_vs_accuracy.png, reliability.png")


if __name__ == "__main__":
    main()
