"""RolloutDataModule: regenerates the K on-policy rollouts of every epoch and serves the distillation examples.

Each epoch (``trainer.reload_dataloaders_every_n_epochs=1``), for this rank's share of the epoch's prompts:

1. sample K completions per prompt from the *current* student through the run's rollout engine;
2. verify them with the task's verifier;
3. revise them into distillation examples (:mod:`caopd_pl.revision`: P_acc, the teacher's evidence, the revised
   completions; with ``calibration: none``, plain SDFT/OPD, the completions keep their own confidence);
4. serve (student prompt + completion, teacher prompt + completion) pairs.

With ``rl`` set (the RL baselines, RLVR and RLCR) steps 3-4 become GRPO's (:mod:`caopd_pl.grpo`): each rollout is
rewarded, normalised within its prompt's group, scored by the sampling student, and served as (plain prompt +
sampled completion, advantage, old log-probabilities), ``rl.passes`` times per epoch. Steps 1-2, the prompts and
the seeds are the same for every method, so all spend the same rollout budget.

All K rollouts of a prompt stay on the rank that sampled them; ranks trim to the same number of examples so that
data-parallel steps stay in lockstep.

The student is not read through the trainer: the rollout engine is a :class:`~caopd_pl.rollout.shared.SharedEngine`
that the module binds its student and tokenizer to, and that its evaluation decodes through too (one engine, one vLLM,
per run). The CLI hands both this object and the task to the module (``data.shared_engine`` ->
``model.shared_engine``, ``data.task`` -> ``model.task``).
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm

from caopd_pl.calibration import EstimatorConfig
from caopd_pl.confidence import parse_confidence
from caopd_pl.data import DistillExample, collate_distill, collate_prompts
from caopd_pl.errors import UsageError, one_line
from caopd_pl.grpo import PolicyExample, RLConfig, collate_policy, policy_examples, score_old_logprobs
from caopd_pl.inspection import EpochTrace
from caopd_pl.metrics import expected_calibration_error
from caopd_pl.revision import Calibration, RevisionSettings, revise_group
from caopd_pl.rollout import RolloutConfig, RolloutEngine
from caopd_pl.rollout.base import Rollout
from caopd_pl.rollout.shared import SharedEngine
from caopd_pl.sampling import EpochPermutation, strata, stratified_sample
from caopd_pl.tasks.base import Task, TaskExample
from caopd_pl.tasks.checks import check_fit_data, check_stratify_key, train_rows
from caopd_pl.tasks.jsonl import read_prompts
from caopd_pl.templates import TeacherConfig, prompt_ids, revised_completion_ids


@dataclass
class EpochRollouts:
    """What one epoch's rollouts produced on this rank."""

    examples: list[DistillExample] | list[PolicyExample] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    trace: EpochTrace | None = None
    """The prompts, rollouts, verdicts and examples, for :class:`caopd_pl.callbacks.InspectRollouts`."""


class RolloutDataModule(L.LightningDataModule):
    """On-policy rollouts for CaOPD (and, with ``calibration: none``, for the SDFT baseline).

    Args:
        task: the task (prompts, references, demonstrations, verifier); None only for ``predict`` with
            ``predict_prompts``.
        rollout: sampling settings and engine.
        teacher: the teacher's template.
        calibration: ``empirical`` (CaOPD) or ``none`` (SDFT/OPD baseline).
        estimator: how P_acc is estimated from the K verdicts.
        prompts_per_epoch: training prompts sampled (without replacement) each epoch, across all ranks; None uses
            the whole train split.
        batch_size: distillation examples per optimizer micro-batch.
        eval_batch_size: prompts per validation/test generation batch.
        max_eval_prompts: cap on validation prompts (test and predict always use the full split).
        test_split: the split ``test`` evaluates (``test`` or ``ood`` where the task has one).
        predict_split: the split ``predict`` answers.
        predict_prompts: a JSONL file of prompts that ``predict`` answers instead of ``predict_split``, with or
            without a task: one object per line, ``{"prompt": "..."}`` or ``{"messages": [{"role", "content"}, ...]}``,
            an optional ``system`` string and ``id``; other fields pass through to the predictions
            (:func:`caopd_pl.tasks.jsonl.read_prompts`). Nothing is judged: the predictions have no verdict.
        seed: seed of prompt sampling and shuffling.
        rl: train by GRPO on rewarded rollouts instead of distilling (:mod:`caopd_pl.grpo`; ``rl.reward``: ``rlvr``,
            ``rlcr``): the RL baselines. None (default): distillation, ``calibration`` choosing CaOPD or SDFT; with
            ``rl`` set, ``calibration``, ``teacher`` and ``estimator`` are not read.
        stratify_by: a key of the train rows' ``meta`` (``level`` for the arithmetic and string tasks; a JSONL,
            science or tool-use row's extra fields, e.g. ``source``): each epoch's prompts are then drawn evenly
            over its distinct values (each value gets ``prompts_per_epoch // G`` prompts of the G values, the
            remainder goes to values drawn by the epoch's generator, a value with fewer rows gives them all and the
            others share the shortfall), without replacement, in a seeded shuffled order. Uniform sampling trains a
            group in proportion to its size, and a small group may be missing from most epochs (the quickstart's
            ``1+1`` level: docs/reproducing.md). None (default): uniform over the rows.
    """

    def __init__(
        self,
        task: Task | None = None,
        rollout: RolloutConfig = RolloutConfig(),
        teacher: TeacherConfig = TeacherConfig(),
        calibration: Calibration = "empirical",
        estimator: EstimatorConfig = EstimatorConfig(),
        prompts_per_epoch: int | None = 64,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        max_eval_prompts: int | None = None,
        test_split: str = "test",
        predict_split: str = "test",
        predict_prompts: str | None = None,
        seed: int = 0,
        stratify_by: str | None = None,
        rl: RLConfig | None = None,
    ) -> None:
        super().__init__()
        if calibration not in ("empirical", "none"):
            raise ValueError(f"data.calibration must be 'empirical' or 'none', got {calibration!r}")
        if prompts_per_epoch is not None and prompts_per_epoch < 1:
            raise ValueError(f"data.prompts_per_epoch must be >= 1 or null, got {prompts_per_epoch}")
        if stratify_by is not None and not (isinstance(stratify_by, str) and stratify_by):
            raise ValueError(
                f"data.stratify_by must name a meta key of the rows (e.g. 'level') or null, got {stratify_by!r}"
            )
        check_prompt_source(task, predict_prompts)
        for key, split in (("test_split", test_split), ("predict_split", predict_split)):
            if task is not None and split not in task.splits():
                raise ValueError(f"data.{key}={split!r} is not a split of {task.name}: {task.splits()}")
        self.task, self.rollout, self.teacher = task, rollout, teacher
        self.calibration, self.estimator = calibration, estimator
        self.prompts_per_epoch, self.batch_size, self.eval_batch_size = prompts_per_epoch, batch_size, eval_batch_size
        self.max_eval_prompts, self.test_split, self.predict_split = max_eval_prompts, test_split, predict_split
        self.predict_prompts = predict_prompts
        self.prompt_rows: list[TaskExample] = []
        self.seed, self.stratify_by = seed, stratify_by
        self.rl = rl
        self.reward = None if rl is None else rl.make_reward()
        check_rl_rollouts(rl, rollout)
        self._strata_shown = False
        self.revision = RevisionSettings(calibration, teacher, estimator, rollout.max_new_tokens)
        self.shared_engine = SharedEngine(rollout)
        self.last_epoch: EpochRollouts | None = None

    @property
    def engine(self) -> RolloutEngine | None:
        """The rollout engine, once created (None before the first rollouts or evaluation, and after teardown)."""
        return self.shared_engine.engine

    # ---- training data -------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Check, before the warm start and the first rollouts, that the task's data holds what the config needs;
        for ``predict`` with ``predict_prompts``, read the prompts.

        Raises:
            UsageError: no task for a stage that needs one, a malformed prompts file, the task has no train split,
                rows lack the demonstrations the teacher template needs, rows lack the ``data.stratify_by`` key, the
                completion length cannot hold the confidence line, or the vLLM tensor-parallel size does not divide
                the processes (the message names the key and the fix; the module checks what its warm start needs).
        """
        check_tensor_parallel(self.rollout, self.trainer.world_size if self.trainer is not None else 1)
        if self.task is None and stage != "predict":
            raise UsageError(f"data.task: {stage} needs a task; only predict runs without one, on data.predict_prompts")
        if stage == "predict" and self.predict_prompts is not None:
            try:
                self.prompt_rows = read_prompts(self.predict_prompts)
            except ValueError as err:  # the loader names the file, the line and the fix
                raise UsageError(f"data.predict_prompts: {one_line(err)}") from err
        if stage == "fit" and self.rl is not None:  # no teacher prompts, no revised completions
            self._check_trainer()
            train_rows(self.task)
        elif stage == "fit":
            self._check_trainer()
            check_fit_data(self.task, self.teacher)
            check_completion_cap(self.shared_engine.tokenizer, self.rollout.max_new_tokens)
            if self.stratify_by is not None:
                check_stratify_key(self.task, self.stratify_by)

    def train_dataloader(self) -> DataLoader:
        """This epoch's distillation examples, freshly sampled from the current student, in a seeded order."""
        trainer = self.trainer
        epoch = trainer.current_epoch
        if _closes_a_finished_epoch(trainer):
            return DataLoader(_NoExamples(), batch_size=None)
        prompts = self.epoch_prompts(epoch, trainer.global_rank, trainer.world_size)
        self._show_strata(epoch)
        self.last_epoch = self.build_epoch(prompts, epoch, trainer.global_rank)
        examples = _trim_to_common_length(self.last_epoch.examples)
        if not examples:
            return self._empty_epoch(epoch, len(prompts))
        passes = 1 if self.rl is None else self.rl.passes
        pad_id = self.shared_engine.bound_tokenizer().pad_token_id
        if self.rl is None:
            collate = partial(collate_distill, pad_id=pad_id)
        else:
            collate = partial(collate_policy, pad_id=pad_id, temperature=self.rollout.temperature)
        return DataLoader(
            examples,
            batch_size=self.batch_size,
            sampler=EpochPermutation(
                len(examples), self.seed * 1_000_003 + epoch, skip=1 if epoch == 0 else 2, passes=passes
            ),
            # The loader draws a base seed (for workers) at every iter(): from its own generator, not the global one,
            # so that the number of iter() calls cannot change the global random state.
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=collate,
        )

    def _empty_epoch(self, epoch: int, prompts: int) -> DataLoader:
        # Every prompt skipped (no correct rollout with no_correct_rollout: skip). A sized empty loader would end
        # fit ("No training batches") and RandomSampler refuses 0 items; an iterable one has no length, so Lightning
        # runs the epoch, which ends at once: no optimizer step, the epoch's hooks (rollout stats) still run.
        if self._is_global_zero():
            print(f"epoch {epoch}: no distillation examples ({prompts} prompts skipped); no training this epoch")
        return DataLoader(_NoExamples(), batch_size=None)

    def epoch_prompts(self, epoch: int, rank: int = 0, world_size: int = 1) -> list[TaskExample]:
        """This rank's prompts for ``epoch``: a sample of the train split seeded by (``seed``, ``epoch``), uniform or
        stratified over ``stratify_by``, split evenly across ranks."""
        pool = self.task.split("train")
        count = len(pool) if self.prompts_per_epoch is None else min(self.prompts_per_epoch, len(pool))
        rng = random.Random(self.seed * 7919 + epoch)
        if self.stratify_by is None:
            chosen = rng.sample(range(len(pool)), count)
        else:
            chosen = stratified_sample(rng, list(strata(pool, self.stratify_by).values()), count)
        chosen = chosen[: count - count % world_size] if world_size > 1 else chosen
        return [pool[i] for i in chosen[rank::world_size]]

    def _show_strata(self, epoch: int) -> None:
        # Once per process: how many of the epoch's prompts (all ranks) each group got.
        if self.stratify_by is None or self._strata_shown or not self._is_global_zero():
            return
        self._strata_shown = True
        counts = Counter(example.meta[self.stratify_by] for example in self.epoch_prompts(epoch))
        shown = ", ".join(f"{value} {count}" for value, count in sorted(counts.items(), key=lambda kv: str(kv[0])))
        print(f"data.stratify_by={self.stratify_by!r}: epoch {epoch}'s prompts per group: {shown}")

    def build_epoch(self, prompts: list[TaskExample], epoch: int, rank: int = 0) -> EpochRollouts:
        """Rollouts, verification and revision for ``prompts`` (steps 1-3 of the module docstring), or with ``rl``
        the rewarded and scored policy examples.

        Rollouts are seeded by (``rollout.seed``, ``epoch``, ``rank``): a resumed epoch samples what it sampled.
        """
        engine = self.shared_engine.synced()
        tokenizer = self.shared_engine.bound_tokenizer()
        student_prompts = [prompt_ids(tokenizer, example.student_messages()) for example in prompts]
        seed = self.rollout.seed + 10_007 * epoch + 101 * rank
        rollouts = engine.generate(student_prompts, seed=seed, progress=self._is_global_zero())
        verdicts = self._verify(prompts, rollouts)
        if self.rl is not None:
            result = self._policy_epoch(student_prompts, rollouts, verdicts)
            groups = _grouped_like(result.examples, rollouts)
        else:
            groups = [
                revise_group(tokenizer, *prompt, self.revision)
                for prompt in zip(prompts, student_prompts, rollouts, verdicts)
            ]
            examples = [example for group in groups for example in group]
            result = EpochRollouts(examples, _rollout_stats(rollouts, verdicts, examples))
        result.trace = EpochTrace(epoch, prompts, student_prompts, rollouts, verdicts, groups, self.estimator)
        return result

    def _policy_epoch(
        self, student_prompts: list[list[int]], rollouts: list[list[Rollout]], verdicts: list[list[bool]]
    ) -> EpochRollouts:
        """GRPO's examples: rewarded, normalised per group, and scored by the student that sampled them."""
        examples = policy_examples(student_prompts, rollouts, verdicts, self.reward, self.rl)
        pad_id = self.shared_engine.bound_tokenizer().pad_token_id
        # The training step's precision (autocast under mixed precision), so that the first ratio is 1.
        trainer = self.trainer
        with trainer.precision_plugin.train_step_context() if trainer is not None else contextlib.nullcontext():
            score_old_logprobs(self.shared_engine.student, examples, pad_id, self.rollout.temperature, self.batch_size)
        result = EpochRollouts(examples, _rollout_stats(rollouts, verdicts, examples))
        rewards = [example.reward for example in examples]
        groups = [rewards[i : i + self.rollout.num_samples] for i in range(0, len(rewards), self.rollout.num_samples)]
        result.stats["reward"] = sum(rewards) / max(len(rewards), 1)
        # Prompts whose K rewards are all equal: advantages 0, no policy gradient from them.
        result.stats["flat_groups"] = sum(len(set(group)) == 1 for group in groups) / max(len(groups), 1)
        return result

    def _verify(self, prompts: list[TaskExample], rollouts: list[list[Rollout]]) -> list[list[bool]]:
        texts = [rollout.text for group in rollouts for rollout in group]
        references = [example.reference for example, group in zip(prompts, rollouts) for _ in group]
        verdicts = []
        chunk = 256
        progress = tqdm(total=len(texts), desc="verify", unit="rollout", disable=not self._is_global_zero())
        for start in range(0, len(texts), chunk):
            verdicts += self.task.verifier.verify_batch(texts[start : start + chunk], references[start : start + chunk])
            progress.update(min(chunk, len(texts) - start))
        progress.close()
        flat = iter([v.correct for v in verdicts])
        return [[next(flat) for _ in group] for group in rollouts]

    def _check_trainer(self) -> None:
        # trainer.use_distributed_sampler is checked by the CLI (caopd_pl.cli), from the config: the trainer keeps
        # it only in a private attribute.
        if self.trainer.reload_dataloaders_every_n_epochs != 1:
            raise UsageError(
                f"trainer.reload_dataloaders_every_n_epochs={self.trainer.reload_dataloaders_every_n_epochs}: CaOPD "
                "regenerates rollouts every epoch; set it to 1"
            )

    def _is_global_zero(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    # ---- evaluation data -----------------------------------------------------------------------------------------

    def val_dataloader(self) -> DataLoader:
        return self._prompt_loader(self.task.split("val")[: self.max_eval_prompts])

    def test_dataloader(self) -> DataLoader:
        return self._prompt_loader(self.task.split(self.test_split))

    def predict_dataloader(self) -> DataLoader:
        if self.predict_prompts is not None:
            return self._prompt_loader(self.prompt_rows)  # read by setup("predict")
        return self._prompt_loader(self.task.split(self.predict_split))

    def _prompt_loader(self, examples: list[TaskExample]) -> DataLoader:
        tokenizer = self.shared_engine.bound_tokenizer()
        items = [(prompt_ids(tokenizer, example.student_messages()), example) for example in examples]
        return DataLoader(items, batch_size=self.eval_batch_size, shuffle=False, collate_fn=collate_prompts)

    def teardown(self, stage: str) -> None:
        self.shared_engine.close()  # made by any stage (evaluation too); a later run makes a fresh one
        if self.task is not None:
            self.task.verifier.close()


class _NoExamples(IterableDataset):
    """The training data of an epoch without distillation examples: nothing, of unknown length."""

    def __iter__(self) -> Iterator[DistillExample]:
        return iter(())


def check_prompt_source(task: Task | None, predict_prompts: str | None) -> None:
    """Refuse a datamodule with nothing to prompt: no task and no prompts file, or a prompts file that is not one.

    Raises:
        ValueError: naming ``data.task`` or ``data.predict_prompts`` and the fix.
    """
    if task is None and predict_prompts is None:
        raise ValueError(
            "data.task is required (a class_path and init_args; configs/quickstart.yaml has one); only predict runs "
            "without one, on data.predict_prompts (a JSONL file of prompts)"
        )
    if predict_prompts is not None and not Path(predict_prompts).is_file():
        raise ValueError(f"data.predict_prompts={predict_prompts!r} is not a file (a JSONL file of prompts)")


def check_rl_rollouts(rl: RLConfig | None, rollout: RolloutConfig) -> None:
    """Refuse rollouts that give GRPO nothing to compare: a group of one, or K identical greedy completions.

    Raises:
        ValueError: naming ``data.rollout.num_samples`` or ``data.rollout.temperature`` and the value.
    """
    if rl is None:
        return
    if rollout.num_samples < 2:
        raise ValueError(
            f"data.rollout.num_samples={rollout.num_samples}: data.rl compares each rollout with its group's mean; "
            "sample at least 2"
        )
    if rollout.temperature == 0:
        raise ValueError(
            "data.rollout.temperature=0 with data.rl: greedy rollouts of a prompt are identical and their advantages "
            "all 0; sample at a temperature > 0"
        )


def check_tensor_parallel(rollout: RolloutConfig, world_size: int) -> None:
    """Refuse, before any model work, a vLLM tensor-parallel size that does not divide the training processes (each
    group of ``tensor_parallel_size`` ranks shares one engine).

    Raises:
        UsageError: naming ``data.rollout.tensor_parallel_size``, the process count and the fix.
    """
    tp = rollout.tensor_parallel_size
    if rollout.engine == "vllm" and (tp < 1 or world_size % tp):
        raise UsageError(
            f"data.rollout.tensor_parallel_size={tp} must divide the number of training processes ({world_size}); "
            "launch a multiple of it (trainer.devices x trainer.num_nodes), or set it to 1"
        )


def check_completion_cap(tokenizer, max_new_tokens: int) -> None:
    """Refuse a completion length too short to hold the confidence line and EOS: every revised target would be that
    line alone (the revision keeps it whatever the cap), longer than the cap and with no answer in it. A cap of
    exactly the line's length is accepted (tests use it to keep completions short), though it leaves no room for an
    answer either.

    Raises:
        UsageError: naming ``data.rollout.max_new_tokens``, the shortest length that fits, and the fix.
    """
    if tokenizer is None:  # no student bound: nothing revises
        return
    needed = len(revised_completion_ids(tokenizer, "", 1.0))  # "\nConfidence: 1.00" + EOS, the shortest target
    if max_new_tokens < needed:
        raise UsageError(
            f"data.rollout.max_new_tokens={max_new_tokens} is shorter than the confidence line the revision writes "
            f"({needed} tokens with EOS, before any answer); give at least {needed}, more for an answer"
        )


def _rollout_stats(
    rollouts: list[list[Rollout]], verdicts: list[list[bool]], examples: list[DistillExample]
) -> dict[str, float]:
    stated = [parse_confidence(r.text) for group in rollouts for r in group]
    correct = torch.tensor([c for group in verdicts for c in group], dtype=torch.float64)
    confidence = torch.tensor([s.value for s in stated], dtype=torch.float64)
    p_acc = [sum(group) / len(group) for group in verdicts if group]
    return {
        "p_acc": sum(p_acc) / max(len(p_acc), 1),
        "stated_confidence": float(confidence.mean()) if len(confidence) else float("nan"),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "ece": float(expected_calibration_error(confidence, correct)) if len(correct) else float("nan"),
        "format_adherence": sum(s.parsed for s in stated) / max(len(stated), 1),
        "finished": sum(r.finished for group in rollouts for r in group) / max(len(stated), 1),
        "examples": float(len(examples)),
    }


def _grouped_like(examples: list[PolicyExample], rollouts: list[list[Rollout]]) -> list[list[PolicyExample]]:
    """One policy example per rollout, split into the rollouts' groups."""
    flat = iter(examples)
    return [[next(flat) for _ in group] for group in rollouts]


def _trim_to_common_length(examples: list[DistillExample]) -> list[DistillExample]:
    # Ranks may keep different numbers of examples (prompts skipped without a correct rollout); every rank must run
    # the same number of steps, so all trim to the smallest count.
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return examples
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    count = torch.tensor(len(examples), dtype=torch.long, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MIN)
    return examples[: int(count)]


def _closes_a_finished_epoch(trainer: L.Trainer) -> bool:
    """Whether Lightning asks for the loader of an epoch that a resumed checkpoint already finished.

    A checkpoint written at the end of an epoch (``ModelCheckpoint`` saves after validation) records the epoch as
    processed but not completed; on resume Lightning re-enters that epoch only to close it, trains no batch of it,
    and still asks for its loader. Its rollouts would cost a whole epoch of sampling for nothing, so it gets an empty
    loader.
    """
    progress = trainer.fit_loop.epoch_progress.total
    return progress.processed > progress.completed
