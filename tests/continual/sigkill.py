"""A callback that crashes the process for real: the continual resume test injects it through a stage's overrides.

Lives in the tests, not in the package: production code has no kill switch. It kills only when the environment
variable :data:`ARMED` is set, so the same config (and so the same fingerprint) serves the killed run and its resume.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

ARMED = "CAOPD_TEST_SIGKILL"
CLASS_PATH = "tests.continual.sigkill.SigkillAfterFirstBatch"


class SigkillAfterFirstBatch(L.Callback):
    """SIGKILL this process after its first training batch when ``$CAOPD_TEST_SIGKILL`` is set (a crash mid-fit)."""

    def on_train_batch_end(self, *args: Any) -> None:
        if os.environ.get(ARMED):
            os.kill(os.getpid(), signal.SIGKILL)
