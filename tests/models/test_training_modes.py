"""During fit the student trains in train mode (dropout on, gradient checkpointing active), the teacher in eval mode.

``from_pretrained`` returns a model in eval mode and Lightning 2.6 keeps whatever modes it finds at fit start, so a
real checkpoint used to train with dropout off and gradient checkpointing silently inactive.
"""

from __future__ import annotations

import warnings

import pytest
import transformers.modeling_utils
from lightning.pytorch import Callback
from test_precision import local_model_config

from caopd_pl.cli import cli_main


class ModeRecorder(Callback):
    """At every training step: the student's and teacher's modes, and the checkpointed calls during the step."""

    def __init__(self, calls: list[int]) -> None:
        self.calls = calls
        self.steps: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.calls_before = self.calls[0]

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps.append(
            dict(
                student=[m.training for m in module.student.modules()],
                teacher=[m.training for m in module.teacher.modules()],
                checkpointed=self.calls[0] - self.calls_before,
            )
        )


@pytest.mark.slow
def test_student_trains_in_train_mode_with_checkpointing_and_teacher_stays_eval(tmp_path, monkeypatch):
    calls = [0]
    checkpoint = transformers.modeling_utils.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls[0] += 1
        return checkpoint(*args, **kwargs)

    # gradient_checkpointing_enable binds this module-level name when the model is loaded.
    monkeypatch.setattr(transformers.modeling_utils, "checkpoint", counting_checkpoint)
    config, _ = local_model_config(tmp_path, max_epochs=2, model={"gradient_checkpointing": True})
    cli = cli_main(["--config", str(config)], run=False)
    recorder = ModeRecorder(calls)
    cli.trainer.callbacks.append(recorder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert len(recorder.steps) == 4  # 2 epochs x 2 steps, a validation and rollouts in between
    for step in recorder.steps:
        assert all(step["student"]) and not any(step["teacher"])
        assert step["checkpointed"] == 2  # one per decoder layer of the student; none for the no-grad teacher
    assert not [w for w in caught if "in eval mode at the start of training" in str(w.message)]
