"""Named, derived random streams so that every seed of an audit can be recorded.

Each stream's seed is a hash of the run seed and the stream's purpose, so adding a
selector or a round never shifts the numbers of another stream (common random
numbers across selectors).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


# Seeds stay below 2**52 so that they survive JSON (RFC 8785 numbers are IEEE doubles)
# even after a small per-round offset is added.
SEED_BITS = 52


def derive_seed(root: int, *keys: object) -> int:
    """Return a 52-bit seed derived from ``root`` and the ``keys`` naming a stream."""
    text = "/".join([str(root), *(str(key) for key in keys)])
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)


class SeedBook:
    """Hand out derived seeds and remember each one by purpose."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.streams: dict[str, int] = {}

    def seed(self, *keys: object) -> int:
        """Return the seed of the stream named by ``keys`` and record it."""
        seed = derive_seed(self.root, *keys)
        self.streams["/".join(str(key) for key in keys)] = seed
        return seed

    def torch(self, *keys: object) -> torch.Generator:
        """Return a CPU torch generator seeded for the stream named by ``keys``."""
        return torch.Generator().manual_seed(self.seed(*keys))

    def numpy(self, *keys: object) -> np.random.Generator:
        """Return a numpy generator seeded for the stream named by ``keys``."""
        return np.random.default_rng(self.seed(*keys))
