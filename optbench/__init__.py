"""optbench: benchmark optimizers on analytic landscapes and small networks.

The public API is imported lazily so that ``import optbench`` (and the CLI's ``--help``) stays fast::

    from optbench import get_problem, get_optimizer, load_results

One call per command (optbench.api): ``optbench.run``, ``optbench.tune``, ``optbench.report``,
``optbench.baseline`` and ``optbench.check``. ``optbench.report`` and ``optbench.check`` are also the packages
of those names, made callable (a submodule import binds the package name on ``optbench``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for IDEs and type checkers
    from optbench.api import baseline, run, tune  # noqa: F401

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
    "run": "optbench.api",
    "tune": "optbench.api",
    "baseline": "optbench.api",
    "RunOutcome": "optbench.api",
    "ReportOutcome": "optbench.api",
    "TuneOutcome": "optbench.tuning.orchestrate",
    "BaselineOutcome": "optbench.check.baseline",
    "CheckResult": "optbench.check.baseline",
    "Tolerances": "optbench.check.compare",
}
# callable packages: optbench.report(...) and optbench.check(...) call optbench.api.report / optbench.api.check
_CALLABLE_PACKAGES = ("report", "check")

__all__ = ["__version__", *_LAZY, *_CALLABLE_PACKAGES]


def __getattr__(name: str):
    import importlib

    if name in _CALLABLE_PACKAGES:
        return importlib.import_module(f"optbench.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optbench' has no attribute {name!r}")
