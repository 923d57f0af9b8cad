"""The one derivation of a random stream's seed from a run's seed: a hash, so that no two streams share a seed.

:func:`derive_seed` seeds each training epoch's global state (:func:`caopd_pl.resume.epoch_seed`) and each
reasoning-gym split (:func:`caopd_pl.tasks.reasoning_gym.split_seed`); a new stream derives its seed here. Older
streams keep the arithmetic formulas they were measured with, because the results docs/ quotes depend on them: the
datamodule's prompt order (``seed * 1_000_003 + epoch``), stratified draws (``seed * 7919 + epoch``) and rollout
seeds (``seed + 10_007 * epoch + 101 * rank``), the evaluation's sampled readouts (``seed + 1_000_003 + batch``), the
engines' chunk and request seeds, and a continual sequence's stages (``seed + stage``).
"""

from __future__ import annotations

import hashlib
from typing import Literal


def derive_seed(seed: int, stream: object, *, byteorder: Literal["little", "big"] = "little", bits: int = 32) -> int:
    """A seed for ``stream`` (an epoch, a split's name) of a run seeded with ``seed``, below ``2**bits``.

    The first four bytes of ``sha256("<seed>:<stream>")`` read in ``byteorder``, modulo ``2**bits``: within NumPy's
    32-bit range, and far from the seeds of other streams and runs. ``byteorder`` and ``bits`` keep the reasoning-gym
    splits' seeds (big-endian, 31 bits), which were derived so before this function; a new stream takes the defaults.
    """
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:4], byteorder) % 2**bits
