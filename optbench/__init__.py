"""optbench: benchmark optimizers on analytic landscapes and small networks.

The public API is imported lazily so that ``import optbench`` (and the CLI's ``--help``) stays fast::

    from optbench import get_problem, get_optimizer, load_results
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "get_problem": "optbench.problems",
    "list_problems": "optbench.problems",
    "get_optimizer": "optbench.optimizers",
    "list_optimizers": "optbench.optimizers",
    "load_results": "optbench.results",
    "load_summary": "optbench.results",
    "Sweep": "optbench.sweep.spec",
    "Recipe": "optbench.engines.recipe",
    "run_sweep": "optbench.runner",
    "parse_spec": "optbench.spec",
    "parse_spec_list": "optbench.spec",
    "AnalyticTask": "optbench.problems.user",
    "TrainingTask": "optbench.problems.user",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optbench' has no attribute {name!r}")
