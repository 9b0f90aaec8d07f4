"""The random numbers an optimizer draws from torch's and NumPy's *global* generators, fixed by the run's seed.

Some library classes draw inside ``step()`` from a global generator rather than from one of their own:
AdaHessian's and Sophia-H's Hutchinson probes (``torch.randn_like``), Kron's whitening noise (torch) and its coin
for rebalancing its factors (``np.random.random()``), DASH's power-iteration vectors, Gravity's initial velocity,
and any user class may. Left alone, such a
run depends on whatever drew from that generator before it in the process: the same seed gives another
trajectory, a resumed sweep differs from an uninterrupted one, and K trials run side by side take their draws
from one stream in turn, so a trial's result depends on its place in the round.

So every engine that steps a real optimizer object runs it inside :func:`isolated` (the caller's generator
state is put back afterwards) and seeds the global generator of the run's device before building the object
and before every step, from the run seed and the step number (:class:`StepRandomness`):

    s_t = (derive_seed(seed, "optimizer") + t + 1) mod 2⁶³,  t = −1 for construction, 0, 1, … for the steps,

NumPy's legacy global generator with s_t mod 2³² (``np.random.seed``).

A run's draws are then a function of (seed, t) only: the same in a run alone, in a round of trials side by
side (every trial of a round shares the round's seed, so they see common random numbers, like their common
gradient noise), after a resume, and in another process. Classes that draw nothing are unaffected bit for bit.
A closure method draws inside its one ``step()`` call, so its evaluations within a step share s_t's stream.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from optbench.randomness import derive_seed

_SEED_SPACE = 1 << 63
_NUMPY_SEED_SPACE = 1 << 32  # np.random.seed takes 32 bits: s_t mod 2³²


def isolated(device) -> contextlib.AbstractContextManager:
    """Keep the caller's global generator states as they were: torch's (CPU, and the CUDA device's when it is
    one) and NumPy's legacy global generator (``np.random``: Kron's coin for rebalancing its factors)."""
    device = torch.device(device)
    stack = contextlib.ExitStack()
    if device.type == "cuda":
        stack.enter_context(torch.random.fork_rng(devices=[device], device_type="cuda"))
    else:
        stack.enter_context(torch.random.fork_rng(devices=[]))
    stack.enter_context(_numpy_state_kept())
    return stack


@contextlib.contextmanager
def _numpy_state_kept():
    import numpy as np

    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def step_seed(seed: int, t: int) -> int:
    """s_t of the module docstring: the global generator's seed before step ``t`` of a run with ``seed``. A
    batched rule of a class that draws reproduces its draws from a generator seeded with it."""
    return (derive_seed(seed, "optimizer") + t + 1) % _SEED_SPACE


class StepRandomness:
    """Seeds torch's global generator of ``device`` from (run seed, step) before an optimizer draws from it."""

    def __init__(self, seed: int, device="cpu"):
        self.base = derive_seed(seed, "optimizer")  # step_seed(seed, t) = (base + t + 1) mod 2⁶³
        device = torch.device(device)
        self.cuda = (torch.cuda.default_generators[device.index if device.index is not None
                                                   else torch.cuda.current_device()]
                     if device.type == "cuda" else None)

    def before(self, t: int) -> None:
        """Seed for step ``t`` (``t = -1``: the optimizer's construction)."""
        s = (self.base + t + 1) % _SEED_SPACE
        torch.default_generator.manual_seed(s)
        np.random.seed(s % _NUMPY_SEED_SPACE)
        if self.cuda is not None:
            self.cuda.manual_seed(s)
