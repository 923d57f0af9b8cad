"""Tasks from reasoning-gym's procedural generators (``pip install -e ".[real]"``), judged by the ``reasoning_gym``
verifier with each generator's own ``score_answer``.

A split is ``reasoning_gym.create_dataset(dataset, seed=<split seed>, size=..., **config)``; the ``ood`` split is
the same generator with ``ood_config`` laid over ``config`` (a harder setting). Each split's seed is derived from
``seed`` and the split's name (many generators seed item ``i`` with ``seed + i``: seeds a few apart would share
items). The held-out splits are drawn first (``test``, ``val``, ``ood``) and hold distinct questions, none in another
split; ``train`` is drawn last, never holds a held-out question, and may repeat one of its own, as the generator does.
A question that may not be used is replaced by the generator's next one, up to ``DRAWS_PER_EXAMPLE`` draws per
example; a split still short then fails, saying how far it got. Where part of a generator's space is small (chain_sum's
200 one-digit sums), the held-out splits use up much of it and the later splits under-represent it (docs/tasks.md).

- prompt: the generator's question, then ``Give your final answer on the last line as 'Answer: <answer>'.`` (for an
  answer over several lines, a grid or a board: under a line ``Answer:``);
- reference: ``{"dataset", "config", "entry": {"question", "answer", "metadata"}}``, JSON-safe, what the verifier
  needs to rebuild the scorer and score against the entry;
- demonstration: ``Answer: <answer>``, after the generator's worked solution when it has one (in reasoning-gym 0.1.25
  only ``gsm_symbolic``: its ``answer_cot`` without the closing ``#### <answer>`` line), or after the question's
  arithmetic written out with its value (``25 + 68 = 93``) for the generators whose metadata holds that expression
  (:data:`EXPRESSION_GENERATORS`);
- meta: ``{"level": dataset, or "<dataset>@ood" on the ood split, "dataset": dataset}``.

Every example is checked when it is drawn: its demonstration, read and scored as the verifier does it from the
JSON-safe reference, must score 1.0. An entry that fails is skipped. Generators with no single reference answer
(``boxnet``, ``graph_color``, ``propositional_logic``, ``rubiks_cube``, ``rush_hour``: their answer is None) or whose
metadata does not survive JSON (``arc_agi``, ``rearc``: their scorers compare tuples) cannot fill a split, and say so.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from typing import Any

from caopd_pl.errors import UsageError
from caopd_pl.seeds import derive_seed
from caopd_pl.tasks.base import GeneratedTask, TaskExample
from caopd_pl.verifiers import Verifier
from caopd_pl.verifiers.reasoning_gym import INSTALL_HINT, score_here

KEY = "data.task.init_args"
DRAWS_PER_EXAMPLE = 8
"""Draws allowed per example of a split (plus ``EXTRA_DRAWS``) before it is declared unfillable."""
EXTRA_DRAWS = 100
ANSWER_LINE = "Give your final answer on the last line as 'Answer: <answer>'."
ANSWER_BLOCK = "Give your final answer at the end, on the lines under a line 'Answer:'."
_GSM_RESULT = re.compile(r"\n?####[^\n]*\s*$")
_SET_BY_TASK = ("seed", "size")
EXPRESSION_GENERATORS = ("basic_arithmetic", "chain_sum", "decimal_chain_sum", "products")
"""Generators whose ``metadata.expression`` is the question's arithmetic and evaluates to the answer: their
demonstration writes ``<expression> = <answer>`` before the answer line."""


def generators() -> dict[str, tuple[type, type]]:
    """reasoning-gym's registered generators: name -> (dataset class, config dataclass).

    Raises:
        UsageError: reasoning-gym is not installed (the message says how to install it).
    """
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError:
        raise UsageError(f"{KEY}.dataset: ReasoningGymTask needs reasoning-gym; {INSTALL_HINT}") from None
    return DATASETS


def split_seed(seed: int, split: str) -> int:
    """A seed for ``split``, derived from ``seed`` by hashing, so that splits' seeds are far apart."""
    return derive_seed(seed, split, byteorder="big", bits=31)  # below 2**32 even after + index (numpy's limit)


class ReasoningGymTask(GeneratedTask):
    """One reasoning-gym generator as a task (see the module docstring), judged by the ``reasoning_gym`` verifier."""

    def __init__(
        self,
        dataset: str,
        config: dict[str, Any] | None = None,
        ood_config: dict[str, Any] | None = None,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        num_ood: int = 400,
        seed: int = 1234,
        solutions: bool = True,
        verifier: str | Verifier | dict[str, Any] = "reasoning_gym",
    ) -> None:
        """Check the generator and its settings; the splits are generated on first use.

        Args:
            dataset: The generator's registered name, e.g. ``chain_sum``, ``basic_arithmetic``, ``spell_backward``.
            config: The generator's settings (its config dataclass's fields, e.g. ``{min_terms: 2, max_terms: 2}``);
                ``seed`` and ``size`` are the task's. None: the generator's defaults.
            ood_config: Settings laid over ``config`` for the ``ood`` split (a harder setting, e.g.
                ``{min_terms: 3, max_terms: 3}``); None: no ``ood`` split.
            num_train: Training prompts.
            num_val: Validation prompts.
            num_test: Test prompts.
            num_ood: Out-of-distribution prompts (when ``ood_config`` is given).
            seed: Generation seed; each split draws from its own seed derived from it, and no split shares a question.
            solutions: Demonstrations show the worked solution (or the arithmetic written out) before the answer line,
                where the generator gives one; False: the answer line alone.
            verifier: The judge: a registered name, a class path or ``{class_path, init_args}`` (e.g. the
                ``reasoning_gym`` verifier with ``threshold: 0.5`` to accept partial credit).

        Raises:
            UsageError: reasoning-gym is missing, ``dataset`` is not one of its generators, a setting is not one of
                the generator's or is rejected by its validation, or a size is negative.
        """
        super().__init__(verifier)
        self.dataset = check_dataset(dataset)
        self.config = check_config(dataset, dict(config or {}), f"{KEY}.config")
        self.ood_config = None
        if ood_config is not None:
            self.ood_config = check_config(dataset, {**self.config, **ood_config}, f"{KEY}.ood_config")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        if self.ood_config is not None:
            self.sizes["ood"] = num_ood
        for split, size in {**self.sizes, "ood": num_ood}.items():
            if size < 0:
                raise UsageError(f"{KEY}.num_{split}={size}: must be >= 0")
        self.seed, self.solutions = seed, solutions

    @property
    def name(self) -> str:
        return f"{type(self).__name__}({self.dataset})"

    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test", "ood") if self.ood_config is not None else ("train", "val", "test")

    def generate(self) -> dict[str, list[TaskExample]]:
        import reasoning_gym

        held_out: set[str] = set()
        drawn = {}
        for split in ("test", "val", "ood", "train"):  # held-out first: they keep the generator's distribution
            if split in self.sizes:
                config = self.ood_config if split == "ood" else self.config
                source = reasoning_gym.create_dataset(
                    self.dataset, seed=split_seed(self.seed, split), size=self._draws(split), **config
                )
                drawn[split] = self._draw(split, source, config, held_out)
        return {split: drawn[split] for split in self.splits()}

    def _draws(self, split: str) -> int:
        return DRAWS_PER_EXAMPLE * self.sizes[split] + EXTRA_DRAWS

    def _draw(self, split: str, source: Any, config: dict[str, Any], held_out: set[str]) -> list[TaskExample]:
        """``self.sizes[split]`` examples from ``source``, in order, of questions not in ``held_out``; a held-out
        split's questions are distinct and join ``held_out``, ``train`` may repeat one as the generator does.

        Raises:
            UsageError: the generator ran out of new, usable questions within the allowed draws.
        """
        size, examples, repeats, unusable = self.sizes[split], [], 0, 0
        level = f"{self.dataset}@ood" if split == "ood" else self.dataset
        for index in range(self._draws(split)):
            if len(examples) == size:
                break
            entry = source[index]
            if entry["question"] in held_out:
                repeats += 1
                continue
            if split != "train":
                held_out.add(entry["question"])
            example_id = f"{self.dataset}-{split}-{len(examples)}"
            example = make_example(self.dataset, config, entry, example_id, level, self.solutions)
            if example is None:
                unusable += 1
                continue
            examples.append(example)
        if len(examples) < size:
            raise UsageError(self._shortfall(split, len(examples), repeats, unusable))
        return examples

    def _shortfall(self, split: str, made: int, repeats: int, unusable: int) -> str:
        """Why ``split`` could not be filled, in one line."""
        if made == 0 and unusable:
            return (
                f"{KEY}.dataset={self.dataset!r}: none of its {unusable} entries has an answer that scores 1.0 from "
                "its JSON entry, so no example can be verified: generators with no single reference answer (boxnet, "
                "graph_color, propositional_logic, rubiks_cube, rush_hour) or with non-JSON metadata (arc_agi, rearc) "
                "are not supported"
            )
        setting = "ood_config" if split == "ood" else "config"
        return (
            f"{KEY}.num_{split}={self.sizes[split]}: {self.dataset} gave {made} usable new questions in "
            f"{self._draws(split)} draws ({repeats} repeated a held-out question, {unusable} had no answer that "
            f"scores 1.0 from its JSON entry); lower num_{split} or widen {KEY}.{setting}"
        )


def check_dataset(dataset: str) -> str:
    """``dataset`` if reasoning-gym has it.

    Raises:
        UsageError: it does not (the message suggests the closest names).
    """
    names = sorted(generators())
    if dataset in names:
        return dataset
    close = difflib.get_close_matches(str(dataset), names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(n) for n in close)}? " if close else ""
    raise UsageError(
        f"{KEY}.dataset={dataset!r} is not a reasoning-gym generator; {hint}"
        f"it has {len(names)} (reasoning_gym.factory.DATASETS), e.g. {', '.join(names[:3])}, ..."
    )


def check_config(dataset: str, config: dict[str, Any], key: str) -> dict[str, Any]:
    """``config`` as JSON-safe settings of ``dataset``'s generator, validated by its config class.

    Raises:
        UsageError: a setting the generator does not have (naming it and the ones it has), ``seed`` or ``size``
            (the task's), a value that is not JSON, or one the generator's validation rejects.
    """
    config_class = generators()[dataset][1]
    fields = [field.name for field in dataclasses.fields(config_class) if field.name not in _SET_BY_TASK]
    for name in config:
        if name in _SET_BY_TASK:
            raise UsageError(f"{key}.{name}: set by the task ({KEY}.seed, {KEY}.num_*), not in the generator config")
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{key}.{name}: {dataset} has no such setting; {hint}its settings: {', '.join(fields)}")
    try:
        safe = json.loads(json.dumps(config))
    except (TypeError, ValueError) as err:
        raise UsageError(f"{key}={config!r}: settings must be JSON values ({err})") from None
    try:
        made = config_class(**safe, seed=0, size=1)
        if hasattr(made, "validate"):
            made.validate()
    except (AssertionError, TypeError, ValueError) as err:
        raise UsageError(f"{key}={safe!r}: {dataset} rejects it: {err or type(err).__name__}") from None
    return safe


def make_example(
    dataset: str, config: dict[str, Any], entry: dict[str, Any], example_id: str, level: str, solutions: bool = True
) -> TaskExample | None:
    """The example of a generator ``entry``, or None when its demonstration does not score 1.0 from its JSON-safe
    reference (no single answer, metadata that JSON changes, an empty answer, a scorer that raises)."""
    answer = entry.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    try:
        safe = json.loads(json.dumps({k: entry.get(k) for k in ("question", "answer", "metadata")}, default=str))
    except (TypeError, ValueError):
        return None
    reference = {"dataset": dataset, "config": config, "entry": safe}
    demonstration = _demonstration(entry, dataset if solutions else None)
    try:
        if score_here(demonstration, reference)[1] < 1.0:
            return None
    except Exception:  # noqa: BLE001 - a scorer that fails on its own answer makes the entry unusable, not the run
        return None
    instruction = ANSWER_BLOCK if "\n" in answer.strip() else ANSWER_LINE
    return TaskExample(
        messages=[{"role": "user", "content": f"{entry['question'].rstrip()}\n\n{instruction}"}],
        reference=reference,
        demonstration=demonstration,
        id=example_id,
        meta={"level": level, "dataset": dataset},
    )


def _demonstration(entry: dict[str, Any], dataset: str | None) -> str:
    """``Answer: <answer>`` (under a line ``Answer:`` when it spans lines), after the worked solution of
    ``dataset``'s entry if it has one (None: the answer line alone)."""
    answer = entry["answer"].strip()
    line = f"Answer:\n{answer}" if "\n" in answer else f"Answer: {answer}"
    if dataset is None:
        return line
    metadata = entry.get("metadata") or {}
    solution = metadata.get("answer_cot")
    if isinstance(solution, str) and solution.strip():
        return f"{_GSM_RESULT.sub('', solution).strip()}\n{line}"
    expression = metadata.get("expression")
    if dataset in EXPRESSION_GENERATORS and isinstance(expression, str) and expression.strip():
        # The expression written out with its value, as a small instruct model answers arithmetic unprompted
        # ("25 + 68 = 93"): a bare "Answer: 93" asks it to compute without writing anything first.
        return f"{expression.strip()} = {answer}\n{line}"
    return line
