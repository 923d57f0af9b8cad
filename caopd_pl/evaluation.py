"""Evaluation: answer prompts, read the model's confidence in each answer, and write the results.

:class:`Evaluator` decodes the plain prompts through the run's rollout engine (``data.rollout.engine``: vLLM when
configured; the :class:`~caopd_pl.rollout.shared.SharedEngine` the epoch's rollouts use too), synced to the current
student, greedily unless ``model.eval_temperature`` > 0; then verifies each answer with the task's verifier and reads
the model's confidence in it with every readout of ``model.readout`` (:mod:`caopd_pl.readouts`: the greedy
completion's stated value, its expectation under the model, the mean over sampled completions). Each answer becomes
one record carrying its question id and its reference, so ``python -m caopd_pl verify`` re-judges a predictions file
as it is.

:func:`write_test_results` writes a test's ``metrics.json`` (with ``by_readout``), ``test_predictions.jsonl``,
``reliability.png`` (the primary readout) and ``reliability_readouts.png``; :func:`write_predictions` writes
``predictions.jsonl``. The Lightning hooks that call these live in :class:`caopd_pl.module.CaOPDModule`; nothing
here needs a trainer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from caopd_pl.confidence import parse_confidence
from caopd_pl.data import PromptBatch
from caopd_pl.files import atomic_write_json, write_jsonl
from caopd_pl.metrics import answer_tensors, without_nan
from caopd_pl.plots import reliability_diagram, reliability_grid
from caopd_pl.readouts import ReadoutConfig, expected_readouts, sampled_confidence, summaries_by_readout, with_readout
from caopd_pl.rollout.base import Rollout, RolloutConfig
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.verifiers import Verifier

SAMPLED_SEED_OFFSET = 1_000_003
"""Added to the ``sampled`` readout's seeds, so its completions never reuse the evaluation completions' seed."""


class Evaluator:
    """Answers prompts with a student and reads its confidence in each answer.

    Args:
        student: the model evaluated (decoded through ``engine``, scored directly by the ``expected`` readout).
        tokenizer: its tokenizer.
        readout: which confidence readouts to compute, and the primary one.
        max_new_tokens: longest evaluation completion (``model.eval_max_new_tokens``).
        temperature: evaluation's sampling temperature; 0 decodes greedily (``model.eval_temperature``).
        verifier: judges the answers (the task's); None where nothing is judged.
        engine: the run's shared rollout engine, bound to ``student``; None where nothing decodes.
    """

    def __init__(
        self,
        student: torch.nn.Module,
        tokenizer: Any,
        readout: ReadoutConfig,
        max_new_tokens: int,
        temperature: float,
        verifier: Verifier | None = None,
        engine: SharedEngine | None = None,
    ) -> None:
        self.student, self.tokenizer, self.readout = student, tokenizer, readout
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.verifier, self.engine = verifier, engine

    def answer(self, batch: PromptBatch, batch_idx: int = 0) -> list[dict[str, Any]]:
        """One completion per prompt of ``batch``, verified, with its confidence readouts, its id and its reference.

        ``prompt`` is the prompt as the model read it (the chat template applied, the confidence instruction
        included); a prompt without a reference (``data.predict_prompts``) is not judged: ``correct`` is None and
        ``status`` ``unjudged``; ``confidence`` is the primary readout's value (``readout`` names it), ``readouts``
        holds every computed one; ``parsed`` says whether the completion stated a confidence (format adherence).

        Args:
            batch: the tokenised prompts and their examples.
            batch_idx: seeds the batch's completions (with ``data.rollout.seed``).

        Returns:
            One record per prompt, in the batch's order.
        """
        texts = [group[0].text for group in self.decode(batch.prompt_ids, seed=batch_idx)]
        verdicts = self._verdicts(texts, [example.reference for example in batch.examples])
        readouts = self.read_confidence(batch.prompt_ids, texts, batch_idx)
        records = []
        for index, (example, text, verdict) in enumerate(zip(batch.examples, texts, verdicts)):
            values = {name: column[index] for name, column in readouts.items()}
            records.append(
                {
                    **example.meta,
                    "id": example.id,
                    "prompt": self.tokenizer.decode(batch.prompt_ids[index]),  # exactly what the model read
                    "reference": example.reference,  # verify re-judges predictions files as they are
                    "completion": text,
                    "correct": None if verdict is None else verdict.correct,
                    "detail": None if verdict is None else verdict.detail,
                    "status": "unjudged" if verdict is None else verdict.status,
                    "confidence": values[self.readout.primary],
                    "parsed": parse_confidence(text).parsed,
                    "readout": self.readout.primary,
                    "readouts": values,
                }
            )
        return records

    def _verdicts(self, texts: list[str], references: list[Any]) -> list[Any]:
        """The verifier's verdict on each text; None for all when a prompt has no reference (a prompts file's rows,
        ``data.predict_prompts``: nothing to judge against)."""
        if any(reference is None for reference in references):
            return [None] * len(texts)
        return self._verifier().verify_batch(texts, references)

    def read_confidence(self, prompts: list[list[int]], texts: list[str], batch_idx: int = 0) -> dict[str, list[float]]:
        """{readout: one value per prompt} for every readout of ``readout`` (see :mod:`caopd_pl.readouts`).

        Args:
            prompts: the plain prompts' token ids.
            texts: their evaluation (greedy) completions.
            batch_idx: seeds the ``sampled`` readout's completions (with ``data.rollout.seed``).

        Returns:
            Every readout's values, the primary first.
        """
        out: dict[str, list[float]] = {}
        for name in self.readout.readouts:
            if name == "greedy":
                out[name] = [parse_confidence(text).value for text in texts]
            elif name == "expected":
                out[name] = expected_readouts(self.student, self.tokenizer, prompts, texts)
            else:
                out[name] = self._sampled_readouts(prompts, batch_idx)
        return out

    def _sampled_readouts(self, prompts: list[list[int]], batch_idx: int) -> list[float]:
        """The ``sampled`` readout of each prompt: ``readout.num_samples`` completions at ``readout.temperature``."""
        shared = self._engine()
        sampling = replace(
            self.sampling(shared.config), num_samples=self.readout.num_samples, temperature=self.readout.temperature
        )
        seed = shared.config.seed + SAMPLED_SEED_OFFSET + batch_idx
        groups = shared.synced().generate(prompts, seed=seed, sampling=sampling)
        return [sampled_confidence([rollout.text for rollout in group]) for group in groups]

    def decode(self, prompts: list[list[int]], seed: int = 0) -> list[list[Rollout]]:
        """Evaluation completions of tokenised prompts: the run's rollout engine, synced to the current student.

        Evaluating through the rollout engine (vLLM when ``data.rollout.engine`` says so) rather than ``generate``
        on the student is what makes evaluation at the paper's lengths affordable; both engines decode the same way
        (same stop ids, nothing from the checkpoint's generation config), so the choice changes speed, not
        results. With the Hugging Face engine the student decodes in eval mode and gets its mode back.

        Args:
            prompts: the plain prompts' token ids.
            seed: added to ``data.rollout.seed``.

        Returns:
            One group of one completion per prompt.
        """
        shared = self._engine()
        return shared.synced().generate(prompts, seed=shared.config.seed + seed, sampling=self.sampling(shared.config))

    def sampling(self, rollout: RolloutConfig) -> RolloutConfig:
        """``rollout`` with evaluation's sampling: one completion, ``temperature``, ``max_new_tokens``, top-p 1."""
        return replace(
            rollout, num_samples=1, temperature=self.temperature, top_p=1.0, max_new_tokens=self.max_new_tokens
        )

    def _verifier(self) -> Verifier:
        if self.verifier is None:
            raise RuntimeError(
                "evaluation has no task to verify with: build CaOPDModule with task=data.task, as the CLI does"
            )
        return self.verifier

    def _engine(self) -> SharedEngine:
        if self.engine is None:
            raise RuntimeError(
                "evaluation has no rollout engine to decode with: build CaOPDModule with "
                "shared_engine=data.shared_engine, as the CLI does"
            )
        return self.engine


def write_test_results(records: list[dict[str, Any]], readout: ReadoutConfig, out: Path) -> None:
    """Write a test's ``metrics.json``, ``test_predictions.jsonl`` and reliability diagrams into ``out``.

    Args:
        records: :meth:`Evaluator.answer`'s records of the whole test split.
        readout: the readouts they carry; ``metrics.json`` leads with the primary's metrics.
        out: an existing folder.
    """
    primary = readout.primary
    summaries = summaries_by_readout(records, readout.readouts)
    by_readout = {name: without_nan(summary) for name, summary in summaries.items()}
    atomic_write_json(out / "metrics.json", {**by_readout[primary], "readout": primary, "by_readout": by_readout})
    write_jsonl(out / "test_predictions.jsonl", records)
    summary = summaries[primary]
    title = f"ECE {summary['ece']:.3f}, accuracy {summary['accuracy']:.3f} ({primary} readout)"
    confidence, correct, _ = answer_tensors(records)  # the records' confidence is the primary readout's
    reliability_diagram(confidence, correct, out / "reliability.png", title=title)
    if len(by_readout) > 1:
        panels = {name: answer_tensors(with_readout(records, name))[:2] for name in by_readout}
        reliability_grid(panels, out / "reliability_readouts.png")
    written = ["metrics.json", "test_predictions.jsonl", "reliability.png"]
    written += ["reliability_readouts.png"] if len(by_readout) > 1 else []
    print(f"wrote {', '.join(written)} to {out}")


def write_predictions(records: list[dict[str, Any]], out: Path) -> None:
    """Write ``predictions.jsonl`` (one record per line) into the existing folder ``out``."""
    path = out / "predictions.jsonl"
    write_jsonl(path, records)
    print(f"wrote {len(records)} predictions to {path}")
