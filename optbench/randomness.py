"""Seeded randomness shared by problems, engines and optimizers: one named stream per (run seed, purpose), so a
run's seed fixes its start point, its gradient noise and its random directions whichever engine runs it."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, stream: str) -> int:
    """A stable 63-bit seed for one named random stream of a run (start point, noise, directions)."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NoiseStream:
    """Standard-normal draws of shape ``[K, d]`` per step, one independent stream per run seed.

    Each run's stream comes from its own CPU generator, filled in fixed blocks of ``block`` steps, so a
    run sees the same sequence whether it runs alone (K = 1, the loop engine) or among many (the batched
    engine). This is what makes a run's seed fix its noise, whichever engine runs it.
    """

    def __init__(self, seeds: list[int], dim: int, *, stream: str = "noise", dtype=None, device=None,
                 block: int = 256):
        import torch

        self.dim, self.block = dim, block
        self.dtype = dtype or torch.float64
        self.device = device
        self.generators = [torch.Generator().manual_seed(derive_seed(s, stream)) for s in seeds]
        self._buffer = None
        self._pos = block

    def next(self):
        import torch

        if self._pos == self.block:
            blocks = [torch.randn(self.block, self.dim, generator=g, dtype=torch.float64)
                      for g in self.generators]
            self._buffer = torch.stack(blocks, dim=1).to(device=self.device, dtype=self.dtype)
            self._pos = 0
        out = self._buffer[self._pos]
        self._pos += 1
        return out
