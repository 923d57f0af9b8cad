"""The paper's effect on a real pretrained model: base vs SDFT vs CaOPD on any reasoning-gym dataset, on this CPU.

For each seed: warm-start SmolLM2-135M-Instruct (``configs/real/smollm2_chain_sum.yaml`` unless ``--config`` names
another) just long enough to learn the answer format, every demonstration ending in ``Confidence: 1.00``; from that
same checkpoint train SDFT (``calibration: none``) and CaOPD (``calibration: empirical``) with the same seeds,
rollouts and steps; evaluate the three greedily on the ``test`` split and the harder ``ood`` split, with every
confidence readout. The comparison is :mod:`miscalibration`'s (same ``summary.json`` schema, ``levels.json``,
``run.json``, ``confidence_vs_accuracy.png``, ``reliability.png``, Markdown tables); this script only chooses the
model and the task.

    python -m caopd_pl pull smollm2-135m-instruct     # once
    python benchmarks/real_model.py --out runs/real_model --seeds 0 1 2 --readout greedy
    python benchmarks/real_model.py --task basic_arithmetic \\
        --task-config '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"]}' \\
        --ood-config '{"min_digits": 2, "max_digits": 2}' --out runs/real_model_ba --seeds 0 1 2

``--task`` names the reasoning-gym dataset (default: the config's), ``--task-config`` its generator settings and
``--ood-config`` the settings laid over them for the ``ood`` split (JSON objects). With ``--task`` and no
``--ood-config``, the ``ood`` split is the dataset's reasoning-gym curriculum one level up on every attribute from the
task config. ``run.json`` records the task, both configs and the seconds each seed took.
"""

from __future__ import annotations

import argparse

import miscalibration

from caopd_pl.files import json_object

CONFIG = "configs/real/smollm2_chain_sum.yaml"


def task_layer(args: argparse.Namespace) -> list[dict]:
    """The override that sets the config's reasoning-gym task from ``--task``/``--task-config``/``--ood-config``."""
    if args.task is None and args.task_config is None and args.ood_config is None:
        return []
    init: dict = {}
    if args.task is not None:
        init["dataset"] = args.task
        # Another generator's settings never mix with the config's: both are given whole.
        init["config"] = _json_object(args.task_config or "{}", "--task-config")
        init["ood_config"] = None
        if args.ood_config is None:
            init["ood_config"] = curriculum_step(args.task, init["config"])
    elif args.task_config is not None:
        init["config"] = _json_object(args.task_config, "--task-config")
    if args.ood_config is not None:
        init["ood_config"] = _json_object(args.ood_config, "--ood-config")
    return [{"data": {"task": {"init_args": init}}}]


def curriculum_step(dataset: str, config: dict) -> dict:
    """Settings one curriculum level above ``config`` on every attribute of ``dataset``'s reasoning-gym curriculum:
    a range attribute (``min_digits``/``max_digits``) gets both ends at the next level's value, so that every ood
    question is harder than the hardest in-distribution one.

    Raises:
        SystemExit: the dataset has no curriculum (then ``--ood-config`` must say what harder means).
    """
    from reasoning_gym.factory import create_curriculum, has_curriculum

    if not has_curriculum(dataset):
        raise SystemExit(f"--task {dataset}: reasoning-gym has no curriculum for it; give --ood-config JSON")
    curriculum = create_curriculum(dataset)
    harder = {}
    for name, attribute in curriculum.attributes.items():
        fields = _fields(attribute)
        current = [config[f] for f in fields[-1:] if f in config]  # the upper end, or the one field
        level = _level_of(attribute.levels, max(current)) if current else attribute.default_level
        value = attribute.levels[min(level + 1, len(attribute.levels) - 1)]
        for field in fields:
            harder[field] = value
    return harder


def _fields(attribute) -> list[str]:
    """The config fields an attribute sets: [lower, upper] for a range, [field] for a scalar."""
    upper = getattr(attribute, "upper_field_name", None)
    if upper:
        return [attribute.lower_field_name, upper]
    return [getattr(attribute, "field_name", attribute.name)]


def _level_of(levels: list, value) -> int:
    matches = [i for i, level in enumerate(levels) if level == value]
    return matches[0] if matches else 0


def _json_object(text: str, flag: str) -> dict:
    try:
        return json_object(text, f"{flag} {text!r}")
    except ValueError as err:
        raise SystemExit(f"{err}; give a JSON object of generator settings") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    miscalibration.add_arguments(parser, CONFIG)
    parser.add_argument("--task", default=None, help="reasoning-gym dataset name (default: the config's)")
    parser.add_argument("--task-config", default=None, help="its generator settings, a JSON object")
    parser.add_argument("--ood-config", default=None, help="settings laid over them for the ood split, JSON")
    args = parser.parse_args()
    # No validation between epochs: the comparison evaluates every model afterwards, on test and ood.
    layers = [{"trainer": {"limit_val_batches": 0}}, *task_layer(args)]
    notes = {"config": args.config, "task_layers": layers}
    miscalibration.compare(args, layers, tiny=False, notes=notes)


if __name__ == "__main__":
    main()
