"""Seeded randomness shared by problems, engines and optimizers: one named stream per (run seed, purpose), so a
run's seed fixes its start point, its gradient noise and its random directions whichever engine runs it. The
streams themselves are numpy PCG64 generators seeded with these (:mod:`optbench.problems.rng`)."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, stream: str) -> int:
    """A stable 63-bit seed for one named random stream of a run (start point, noise, directions)."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

