"""The figure registry: each figure kind registers itself in its own module with :func:`figure`, and the report
builder, ``optbench report --figures``, ``optbench tune --report-figures`` and ``optbench run --report`` read the
registry (names, order, help text, defaults) — nobody keeps a list of figure names.

A figure is a function ``draw(report) -> list[Section]`` taking the :class:`~optbench.report.build.Builder`
(``report.data``, ``report.static`` / ``report.animated`` formats, ``report.fig_dir``, ``report.table_dir``,
``report.dpi``, ``report.metric``, ``report.title_for(problem)``…) and returning the page sections it adds::

    @figure("curves", needs=STATIC, doc="loss against step, per problem")
    def curves_section(report): ...

This module stays light (no numpy, pandas or matplotlib): listing the figures imports the modules in
``FIGURE_MODULES``, which register theirs on import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from optbench.registry import Registry

STATIC = "static"  # drawn in the static formats (png, svg, pdf)
ANIMATED = "animated"  # drawn in the animation formats (gif, mp4)
ALL = "all"  # --figures all: every registered figure (the default)

# Modules that define figures, imported on the registry's first use; a new figure module is added here.
FIGURE_MODULES = ("optbench.report.animate", "optbench.report.curves", "optbench.report.sensitivity",
                  "optbench.report.grids", "optbench.report.profiles")


@dataclass(frozen=True)
class Figure:
    """A registered figure kind.

    needs: the kind of output format it is drawn in (``STATIC`` or ``ANIMATED``); a report without such a
    format skips it. None: drawn whatever the formats (a figure that also writes tables).
    applies: ``applies(data) -> bool`` on the loaded :class:`~optbench.report.data.ReportData`, False where the
    results cannot show it (a race needs a 2-D problem); None: always.
    """

    name: str
    draw: Callable[[Any], list]
    doc: str
    needs: str | None = STATIC
    applies: Callable[[Any], bool] | None = None


def _import_figure_modules() -> None:
    for module in FIGURE_MODULES:
        importlib.import_module(module)


FIGURES: Registry[Figure] = Registry("figure", load=_import_figure_modules, sort_in_errors=False)


def figure(name: str, *, doc: str, needs: str | None = STATIC,
           applies: Callable[[Any], bool] | None = None) -> Callable[[Callable[[Any], list]], Callable[[Any], list]]:
    """Register the decorated ``draw(report) -> list[Section]`` as figure ``name``; returns it unchanged."""
    if needs not in (STATIC, ANIMATED, None):
        raise ValueError(f"figure {name!r}: needs must be {STATIC!r}, {ANIMATED!r} or None, not {needs!r}")

    def register(draw: Callable[[Any], list]) -> Callable[[Any], list]:
        FIGURES.register(name, Figure(name, draw, doc, needs, applies))
        return draw

    return register


def figure_names() -> list[str]:
    """Every registered figure, in drawing order."""
    return FIGURES.names()


def figures_help() -> str:
    """The figure names with what each shows, for the CLI's help."""
    return "; ".join(f"{f.name} ({f.doc})" for f in FIGURES.list())
