"""Random streams both analytic engines share, in numpy, so the numpy and torch paths draw the same numbers.

- :class:`NormalStream`: the gradient noise of noisy analytic problems. One numpy ``PCG64`` stream per
  run, started from 256 bits of ``sha256("{seed}:{stream}")``, drawn in blocks of ``block`` steps of ``[d]`` standard
  normals (numpy's ziggurat: integer arithmetic and table look-ups, the same numbers on every machine, and
  the same sequence whatever the block size). The loop engine (torch, the reference) and both batched
  paths take their draws from it, so a run's seed fixes its noise whichever engine runs it, bit for bit.
  It replaced the old ``NoiseStream`` (torch's Mersenne Twister through ``torch.randn``) for analytic
  problems: torch's normal transform calls libm's ``log``/``cos``/``sin`` element by element, which numpy
  can only reproduce bit for bit in a Python loop (0.4 s per million draws), while numpy's vectorised
  ``log``/``cos`` differ from libm in the last bit on AVX-512 machines (measured: 8 of 512 draws). Runs
  whose numbers this changed carry ``noise_rng`` in their identity (``sweep.spec.Run.identity``), so results
  computed before are re-run, never mixed with new ones.
- :func:`torch_rand`: ``torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=float64)``
  bit for bit, from numpy's ``MT19937`` (the same engine, seeded the same way, and torch's 53-bit
  uniform: two 32-bit outputs ``hi, lo`` give ``((hi << 32 | lo) & (2⁵³ − 1)) · 2⁻⁵³``), for random start
  points, which therefore did not change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

_MASK53 = np.uint64((1 << 53) - 1)


def torch_rand(seed: int, n: int) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1), exactly those of ``torch.rand(n, dtype=torch.float64)`` from a CPU
    generator seeded with ``seed`` (torch seeds its Mersenne Twister with the low 32 bits)."""
    bits = np.random.MT19937()
    bits._legacy_seeding(int(seed) & 0xFFFFFFFF)  # init_genrand(seed), as at::mt19937(seed)
    raw = bits.random_raw(2 * n).astype(np.uint64)
    words = (raw[0::2] << np.uint64(32)) | raw[1::2]
    return (words & _MASK53).astype(np.float64) * (1.0 / (1 << 53))


def _pcg64_state(seed: int, stream: str) -> tuple[int, int, int, int]:
    """The PCG64 state (state, increment, has_uint32, uinteger) a run's stream starts from: 128 + 128 bits of
    ``sha256("{seed}:{stream}")`` (the text :func:`~optbench.randomness.derive_seed` hashes). Set directly,
    not through ``SeedSequence`` (~20 µs a run, seconds for 100,000 runs)."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:16], "little"), int.from_bytes(digest[16:], "little"), 0, 0


class NormalStream:
    """Standard-normal draws of shape ``[K, d]`` per step, one independent numpy PCG64 stream per run seed.

    ``next()`` returns a float64 numpy array ``[K, d]``; with ``torch_dtype`` (and ``device``) a torch tensor
    of those values (the loop engine and the torch batched path). Draws come in blocks of ``block`` steps;
    a run's sequence is the same whatever the block size and whichever runs share the stream (tested).
    """

    def __init__(self, seeds: Sequence[int], dim: int, *, stream: str = "noise", block: int = 256,
                 torch_dtype=None, device=None):
        self.dim, self.block = dim, max(1, int(block))
        self.torch_dtype, self.device = torch_dtype, device
        self.states = [_pcg64_state(s, stream) for s in seeds]
        self._bits = np.random.PCG64(0)  # one bit generator, its state swapped in per run and block
        self._normal = np.random.Generator(self._bits).standard_normal
        self._buffer = None
        self._pos = self.block

    def _draw_block(self) -> np.ndarray:
        """The next ``[K, block, d]`` draws; each run's generator advances by ``block · d`` normals."""
        by_run = np.empty((len(self.states), self.block, self.dim))
        template = self._bits.state
        for k, (state, inc, has_uint32, uinteger) in enumerate(self.states):
            template["state"]["state"], template["state"]["inc"] = state, inc
            template["has_uint32"], template["uinteger"] = has_uint32, uinteger
            self._bits.state = template
            self._normal(out=by_run[k])
            after = self._bits.state
            self.states[k] = (after["state"]["state"], after["state"]["inc"], after["has_uint32"], after["uinteger"])
        return by_run

    def next(self):
        if self._pos == self.block:
            by_run = self._draw_block()
            if self.torch_dtype is not None:
                import torch

                steps_first = np.ascontiguousarray(by_run.transpose(1, 0, 2))  # [block, K, d]
                self._buffer = torch.from_numpy(steps_first).to(device=self.device, dtype=self.torch_dtype)
            else:
                # numpy reads each step's [K, d] as a strided view: cheaper than transposing the block
                self._buffer = by_run.transpose(1, 0, 2)
            self._pos = 0
        draw = self._buffer[self._pos]
        self._pos += 1
        return draw
