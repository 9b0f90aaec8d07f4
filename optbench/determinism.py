"""Deterministic runs for CI: the same code on the same machine gives bitwise-identical results files.

``--deterministic`` (implied by ``optbench baseline`` and ``optbench check --suite``) means:

- CPU only: GPU kernels (atomics in reductions, cuBLAS workspaces) are not bitwise reproducible run to run;
- float64 for analytic problems, so rounding never decides a comparison;
- ``torch.use_deterministic_algorithms(True)``: an operation without a deterministic implementation raises
  instead of silently varying;
- one intra-op and one inter-op thread: the order of floating-point reductions does not depend on the
  number of cores of the machine.

The run's manifest records ``environment.deterministic`` (see :func:`optbench.sweep.manifest.environment`) with the
torch version and platform, so ``optbench check`` can warn when a baseline comes from another environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optbench.errors import UsageError

DETERMINISTIC_THREADS = 1


def enable_determinism() -> None:
    """Switch torch to deterministic algorithms on a fixed number of threads (process-wide)."""
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(DETERMINISTIC_THREADS)
    try:
        torch.set_num_interop_threads(DETERMINISTIC_THREADS)
    except RuntimeError:  # already set, or parallel work has started: only the intra-op count matters here
        pass


def is_deterministic() -> bool:
    """Whether :func:`enable_determinism` is in force in this process (an executor passes it on to its
    workers); False without importing torch when torch is not loaded (nothing can have turned it on)."""
    import sys

    if "torch" not in sys.modules:
        return False
    import torch

    return bool(torch.are_deterministic_algorithms_enabled()) and torch.get_num_threads() == DETERMINISTIC_THREADS


def deterministic_settings(problems: Sequence[Any], device: str, dtype: str, *,
                           what: str = "--deterministic") -> tuple[str, str]:
    """The (device, dtype) of a deterministic sweep: CPU ('auto' becomes 'cpu'), float64 for analytic problems.

    A GPU device is refused (it cannot be bitwise reproducible), and so is float32 for analytic problems.
    """
    if device not in ("cpu", "auto"):
        raise UsageError(f"{what} runs on the CPU; drop device {device!r} (GPU kernels are not bitwise "
                         "reproducible).")
    if dtype != "float64" and any(getattr(p, "kind", "analytic") == "analytic" for p in problems):
        raise UsageError(f"{what} runs analytic problems in float64; drop dtype {dtype!r}.")
    return "cpu", dtype
