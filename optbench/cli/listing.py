"""``optbench list problems|optimizers``: names, sources, defaults and docs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from optbench.cli.common import console, errors_handled
from optbench.spec import format_value

WHAT = ("problems", "optimizers")
NARROW = 110  # terminal columns below which the optimizer table has three columns instead of six


def _params_text(params) -> str:
    return ", ".join(f"{k}={format_value(p.default)}" for k, p in params.items())


def _description(entry) -> str:
    """The doc, the reference (dim) and what the engines do for the optimizer beyond ``step()`` (italic)."""
    text = escape(entry.doc) + (f"\n[dim]{escape(entry.reference)}[/]" if entry.reference else "")
    return text + "".join(f"\n[italic]{escape(c)}[/]" for c in entry.capabilities())


@errors_handled
def list_command(
    what: Annotated[str, typer.Argument(help="problems or optimizers")],
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered problems or optimizers with their parameters and defaults."""
    from optbench.errors import UsageError, suggest

    if what not in WHAT:
        raise UsageError(f"Cannot list {what!r}.{suggest(what, WHAT)} Valid: {', '.join(WHAT)}.")
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
