"""Random streams both analytic engines share, in numpy, so the numpy and torch paths draw the same numbers.

- :class:`NormalStream`: the gradient noise of noisy analytic problems. One numpy ``PCG64`` generator per
  run, seeded with ``derive_seed(seed, stream)``, drawn in blocks of ``block`` steps of ``[d]`` standard
  normals (numpy's ziggurat: integer arithmetic and table look-ups, the same numbers on every machine, and
  the same sequence whatever the block size). The loop engine (torch, the reference) and both batched
  paths take their draws from it, so a run's seed fixes its noise whichever engine runs it, bit for bit.
  It replaced ``problems.base.NoiseStream`` (torch's Mersenne Twister through ``torch.randn``) for analytic
  problems: torch's normal transform calls libm's ``log``/``cos``/``sin`` element by element, which numpy
  can only reproduce bit for bit in a Python loop (0.4 s per million draws), while numpy's vectorised
  ``log``/``cos`` differ from libm in the last bit on AVX-512 machines (measured: 8 of 512 draws). Runs
  whose numbers this changed carry ``noise_rng`` in their identity (``runner.Run.identity``), so results
  computed before are re-run, never mixed with new ones.
- :func:`torch_rand`: ``torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=float64)``
  bit for bit, from numpy's ``MT19937`` (the same engine, seeded the same way, and torch's 53-bit
  uniform: two 32-bit outputs ``hi, lo`` give ``((hi << 32 | lo) & (2⁵³ − 1)) · 2⁻⁵³``), for random start
  points, which therefore did not change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from optbench.problems.base import derive_seed

_MASK53 = np.uint64((1 << 53) - 1)


def torch_rand(seed: int, n: int) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1), exactly those of ``torch.rand(n, dtype=torch.float64)`` from a CPU
    generator seeded with ``seed`` (torch seeds its Mersenne Twister with the low 32 bits)."""
    bits = np.random.MT19937()
    bits._legacy_seeding(int(seed) & 0xFFFFFFFF)  # init_genrand(seed), as at::mt19937(seed)
    raw = bits.random_raw(2 * n).astype(np.uint64)
    words = (raw[0::2] << np.uint64(32)) | raw[1::2]
    return (words & _MASK53).astype(np.float64) * (1.0 / (1 << 53))


class NormalStream:
    """Standard-normal draws of shape ``[K, d]`` per step, one independent numpy stream per run seed.

    ``next()`` returns a float64 numpy array ``[K, d]``; with ``torch_dtype`` (and ``device``) a torch tensor
    of those values (the loop engine and the torch batched path).
    """

    def __init__(self, seeds: Sequence[int], dim: int, *, stream: str = "noise", block: int = 256,
                 torch_dtype=None, device=None):
        self.dim, self.block = dim, block
        self.torch_dtype, self.device = torch_dtype, device
        self.generators = [np.random.Generator(np.random.PCG64(derive_seed(s, stream))) for s in seeds]
        self._buffer = None
        self._pos = block

    def next(self):
        if self._pos == self.block:
            by_run = np.empty((len(self.generators), self.block, self.dim))
            for k, generator in enumerate(self.generators):
                generator.standard_normal(out=by_run[k])
            out = np.ascontiguousarray(by_run.transpose(1, 0, 2))  # [block, K, d]
            if self.torch_dtype is not None:
                import torch

                out = torch.from_numpy(out).to(device=self.device, dtype=self.torch_dtype)
            self._buffer = out
            self._pos = 0
        draw = self._buffer[self._pos]
        self._pos += 1
        return draw
