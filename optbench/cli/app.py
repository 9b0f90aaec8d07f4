"""The ``optbench`` command. Each command lives in its own module; heavy libraries load inside them."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="optbench",
    help="Benchmark optimizers: cross problems with optimizers, run sweeps, report and check results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# (command name, module, function): modules that are not there yet are skipped.
COMMANDS = [
    ("run", "optbench.cli.run", "run"),
    ("list", "optbench.cli.listing", "list_command"),
    ("show", "optbench.cli.show", "show"),
    ("report", "optbench.cli.report", "report"),
    ("tune", "optbench.cli.tune", "tune"),
    ("check", "optbench.cli.check", "check"),
    ("baseline", "optbench.cli.check", "baseline"),
]
SUBAPPS = [("data", "optbench.cli.data", "app")]

for _name, _module, _attr in COMMANDS:
    try:
        _fn = getattr(importlib.import_module(_module), _attr)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise
        continue
    app.command(_name)(_fn)
for _name, _module, _attr in SUBAPPS:
    try:
        app.add_typer(getattr(importlib.import_module(_module), _attr), name=_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _module:
            raise


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        from optbench import __version__

        print(f"optbench {__version__}")
        raise typer.Exit()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
