"""The ``optbench`` command. Each command lives in its own module; heavy libraries load inside them."""

from __future__ import annotations

import importlib

import typer

# (command name, module, function)
COMMANDS = [
    ("run", "optbench.cli.run", "run"),
    ("list", "optbench.cli.listing", "list_command"),
    ("show", "optbench.cli.show", "show"),
    ("report", "optbench.cli.report", "report"),
    ("tune", "optbench.cli.tune", "tune"),
    ("gallery", "optbench.cli.gallery", "gallery"),
    ("check", "optbench.cli.check", "check"),
    ("baseline", "optbench.cli.check", "baseline"),
]
SUBAPPS = [("data", "optbench.cli.data", "app")]


def _print_version(value: bool) -> None:
    if value:
        from optbench import __version__

        print(f"optbench {__version__}")
        raise typer.Exit()


def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print the version and exit.")) -> None:
    pass  # --version is eager: it answers before typer asks for a command


def build_app(commands=COMMANDS, subapps=SUBAPPS) -> typer.Typer:
    """The typer app with these commands (default: all of them)."""
    built = typer.Typer(
        name="optbench",
        help="Benchmark optimizers: cross problems with optimizers, run sweeps, report and check results.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,  # help texts are plain text: '[check]' and '[tune]' name suite tables, not markup
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(_root)  # a callback keeps a one-command app a group: 'optbench run ...' parses the same
    for name, module, attr in commands:
        built.command(name)(getattr(importlib.import_module(module), attr))
    for name, module, attr in subapps:
        built.add_typer(getattr(importlib.import_module(module), attr), name=name)
    return built


_FULL: list[typer.Typer] = []  # the app of every command, once built


def _full_app() -> typer.Typer:
    if not _FULL:
        _FULL.append(build_app())
    return _FULL[0]


def __getattr__(name: str):
    # ``app`` (every command) is built on first use: ``optbench run`` builds, and imports, its command only
    if name == "app":
        return _full_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def without_flag_metavars(command) -> None:
    """Flags take no value: show none in help (typer would print '<bool>' beside --quiet as if it took one)."""
    for param in command.params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        without_flag_metavars(sub)


def command(argv: list[str] | None = None):
    """The click command of the app, as ``optbench`` runs it. Given the arguments (``argv``, without the
    program name), one that starts with a top-level command name gets an app of that command only: the
    other commands' modules are not imported, nor their options built (~50-70 ms). Anything else (help, a
    misspelt command, ``data``) gets every command."""
    from optbench.cli.common import fill_registry_help

    only = [c for c in COMMANDS if argv and c[0] == argv[0]]
    built = typer.main.get_command(build_app(only, []) if only else _full_app())
    without_flag_metavars(built)
    fill_registry_help(built)
    return built


def main() -> None:
    import sys

    try:
        command(sys.argv[1:])(prog_name="optbench")
    except BrokenPipeError:  # the reader of stdout went away (| head): stop quietly, as Unix tools do
        from optbench.cli.common import quiet_broken_pipe

        quiet_broken_pipe()
        sys.exit(1)
    finally:
        try:
            sys.stdout.flush()  # a pipe closed early fails here rather than in the interpreter's exit
        except BrokenPipeError:
            from optbench.cli.common import quiet_broken_pipe

            quiet_broken_pipe()


if __name__ == "__main__":
    main()
