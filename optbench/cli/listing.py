"""``optbench list problems|optimizers|figures|protocols|pruners|recipes|schedules``: names, sources, defaults and
docs, each read from its registry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from optbench.cli.common import console, errors_handled
from optbench.spec import format_value

WHAT = ("problems", "optimizers", "figures", "protocols", "pruners", "recipes", "schedules")
NARROW = 110  # terminal columns below which the optimizer table has three columns instead of six


def _registry_rows(what: str) -> list[dict]:
    """name, doc and parameters of every entry of one of the smaller registries."""
    if what == "figures":
        from optbench.report.figures import FIGURES

        return [{"name": f.name, "doc": f.doc, "params": {}} for f in FIGURES.list()]
    if what == "protocols":
        from optbench.tuning.protocols import PROTOCOLS

        return [{"name": p.name, "doc": p.doc, "params": {}} for p in PROTOCOLS.list()]
    if what == "pruners":
        from optbench.tuning.protocols import PRUNERS

        return [{"name": n, "doc": " ".join((make.__doc__ or "").split()), "params": {}}
                for n, make in PRUNERS.items()]
    if what == "recipes":
        from optbench.recipes import RECIPES

        return [{"name": r.name, "doc": r.doc + (f" (also: {', '.join(r.aliases)})" if r.aliases else ""),
                 "params": r.params} for r in RECIPES.list()]
    from optbench.schedules import SCHEDULE_DOCS, SCHEDULE_PARAMS

    return [{"name": n, "doc": SCHEDULE_DOCS.get(n, ""), "params": params} for n, params in SCHEDULE_PARAMS.items()]


def _params_text(params) -> str:
    return ", ".join(f"{k}={format_value(p.default)}" for k, p in params.items())


def _description(entry) -> str:
    """The doc, the reference (dim) and what the engines do for the optimizer beyond ``step()`` (italic)."""
    text = escape(entry.doc) + (f"\n[dim]{escape(entry.reference)}[/]" if entry.reference else "")
    return text + "".join(f"\n[italic]{escape(c)}[/]" for c in entry.capabilities())


@errors_handled
def list_command(
    what: Annotated[str, typer.Argument(help="problems, optimizers, figures, protocols, pruners, recipes or "
                                        "schedules")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered problems, optimizers, figures, protocols, pruners, recipes or schedules, with their
    parameters and defaults."""
    from optbench.errors import UsageError, suggest

    if what not in WHAT:
        raise UsageError(f"Cannot list {what!r}.{suggest(what, WHAT)} Valid: {', '.join(WHAT)}.")
    if what not in ("problems", "optimizers"):
        rows = _registry_rows(what)
        if json_out:
            print(json.dumps([{**r, "params": {k: {"default": p.default, "doc": p.doc, "valid": p.valid}
                                               for k, p in r["params"].items()}} for r in rows], indent=2, default=str))
            return
        table = Table(title=f"optbench {what}", show_lines=True)
        for column in ("name", "parameters (defaults)", "description"):
            table.add_column(column, style="bold" if column == "name" else None)
        for r in rows:
            table.add_row(r["name"], _params_text(r["params"]), escape(r["doc"]))
        console.print(table)
        return
    entries: list[Any]  # ProblemEntry or OptimizerEntry, as `what` says
    if what == "problems":
        from optbench.problems import list_problems

        entries = list_problems()
        rows = [{"name": e.name, "kind": e.kind, "batch_size": e.has_batch_size, "doc": e.doc,
                 "params": {k: {"default": p.default, "doc": p.doc, "valid": p.valid} for k, p in e.params.items()}}
                for e in entries]
    else:
        from optbench.optimizers import list_optimizers

        entries = list_optimizers()
        rows = [{"name": e.name, "source": e.source, "class": e.target, "batched": e.batched is not None,
                 "needs_closure": e.needs_closure, "needs_hessian": e.needs_hessian, "doc": e.doc,
                 "reference": e.reference, "deviations": e.deviations, "create_graph": e.create_graph,
                 "schedule_free": e.schedule_free, "lr_free": e.lr_free, "param_groups": e.param_groups,
                 "accumulates_grad": e.accumulates_grad, "gradient_free": e.gradient_free,
                 "matrix_only": e.matrix_only, "supported": not e.unsupported, "unsupported": e.unsupported,
                 "capabilities": e.capabilities(),
                 "params": {k: {"default": p.default, "doc": p.doc, "valid": p.valid} for k, p in e.params.items()}}
                for e in entries]
    if json_out:
        print(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=f"optbench {what}", show_lines=True)
    # under NARROW columns an optimizer's source, class and batched rule go under its name and how it differs
    # from its paper under its description: three columns, each wide enough for a reference to read whole
    narrow = what == "optimizers" and console.width < NARROW
    table.add_column("name", style="bold", overflow="fold")
    if what == "problems":
        table.add_column("kind")
    elif not narrow:
        table.add_column("source")
        table.add_column("batched")
    # fold, never cut with "…": long defaults and arXiv ids wrap over lines
    table.add_column("parameters (defaults)", overflow="fold")
    table.add_column("description", overflow="fold", ratio=2)
    if what == "optimizers" and not narrow:
        table.add_column("differs from the paper", overflow="fold", ratio=2)
    e: Any  # a ProblemEntry or an OptimizerEntry, as `what` says
    for e in entries:
        if what == "problems":
            table.add_row(e.name, e.kind, _params_text(e.params), e.doc)
        elif narrow:
            where = (f"{escape(e.name)}\n[dim]{e.source}\n{e.target.split(':')[-1]}\n"
                     f"batched: {'yes' if e.batched else 'no'}[/]")
            table.add_row(where, _params_text(e.params),
                          _description(e) + f"\n[dim]differs from the paper: {escape(e.deviations)}[/]")
        else:
            table.add_row(e.name, f"{e.source}\n{e.target.split(':')[-1]}", "yes" if e.batched else "no",
                          _params_text(e.params), _description(e), escape(e.deviations))
    console.print(table)
