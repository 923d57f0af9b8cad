"""The run's one rollout engine, shared by the epoch's rollouts (the datamodule) and evaluation (the module).

The CLI hands the datamodule's :class:`SharedEngine` to the module (``data.shared_engine`` -> ``model.shared_engine``),
which binds its student and tokenizer to it; the engine itself is created on first use.
"""

from __future__ import annotations

from typing import Any

import torch

from caopd_pl.rollout import make_engine
from caopd_pl.rollout.base import RolloutConfig, RolloutEngine


class SharedEngine:
    """The run's one rollout engine, shared by the epoch's rollouts (the datamodule) and evaluation (the module).

    The module binds its student and tokenizer (:meth:`bind`); the engine (``rollout.engine``) is created on first
    use, by the epoch's rollouts or by evaluation, so validate/test/predict runs that never ran fit
    (``test --ckpt_path``) get one too; :meth:`close` frees it and a later use makes a fresh one.

    Args:
        config: the rollouts' sampling settings and engine (``data.rollout``).
    """

    def __init__(self, config: RolloutConfig) -> None:
        self.config = config
        self.engine: RolloutEngine | None = None
        self.student: torch.nn.Module | None = None
        self.tokenizer: Any = None

    def bind(self, student: torch.nn.Module, tokenizer: Any) -> None:
        """Sample from ``student`` (trained in place by the module) and tokenise with ``tokenizer``."""
        self.student, self.tokenizer = student, tokenizer

    def bound_tokenizer(self) -> Any:
        """The student's tokenizer.

        Raises:
            RuntimeError: no student was bound (a module built without ``shared_engine``).
        """
        if self.tokenizer is None:
            raise RuntimeError(
                "the rollout engine has no student: build CaOPDModule(..., shared_engine=data.shared_engine, "
                "task=data.task), as the CLI does"
            )
        return self.tokenizer

    def synced(self) -> RolloutEngine:
        """The engine, synced to the bound student's current weights.

        A sync with unchanged weights costs a fingerprint, so evaluating and then sampling from the same weights
        pushes them once. Created and synced outside inference mode: Lightning evaluates under
        ``torch.inference_mode``, and engine weights created there could not be updated in place by the next
        epoch's sync.
        """
        tokenizer = self.bound_tokenizer()
        with torch.inference_mode(False):
            if self.engine is None:
                self.engine = make_engine(self.config, self.student, tokenizer)
            self.engine.sync(self.student)
        return self.engine

    def close(self) -> None:
        """Free the engine (a vLLM engine's memory and processes); the next :meth:`synced` makes a fresh one."""
        if self.engine is not None:
            self.engine.close()
            self.engine = None
