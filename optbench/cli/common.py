"""What every command shares: the error boundary, consoles, and small formatters."""

from __future__ import annotations

import functools
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from optbench.formatting import fmt_num

# Outside a terminal (pipes, CI logs) rich would assume 80 columns and squeeze the tables; COLUMNS, when set, wins.
# emoji=False: user input such as '--device cuda:abc' must print as typed, not as the emoji ':abc:' names.
_PIPE_WIDTH = None if "COLUMNS" in os.environ else 140
console = Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, highlight=False, emoji=False, width=None if sys.stderr.isatty() else _PIPE_WIDTH)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def errors_handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map optbench's exceptions to one clear message and an exit code (2: usage, 1: internal)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rich.markup import escape  # messages quote "[[sweep]]", "[tune]": text, not markup

        from optbench.errors import OptbenchError, UsageError, UserCodeError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UserCodeError as exc:
            err_console.print(f"[bold red]Error in your code:[/] {escape(str(exc))}", markup=True)
            if exc.user_traceback:
                err_console.print(exc.user_traceback, markup=False)
            raise typer.Exit(EXIT_USAGE) from None
        except UsageError as exc:
            err_console.print(f"[bold red]Error:[/] {escape(str(exc))}", markup=True)
            raise typer.Exit(EXIT_USAGE) from None
        except OptbenchError as exc:
            err_console.print(f"[bold red]Failed:[/] {escape(str(exc))}", markup=True)
            raise typer.Exit(EXIT_FAILURE) from None
        except KeyboardInterrupt:
            err_console.print("Interrupted: finished runs are saved; run the same command again to resume.")
            raise typer.Exit(130) from None
        except Exception as exc:  # an optbench bug: say so, with what is needed to report it
            from optbench import __version__

            err_console.print(
                f"[bold red]Internal error[/] (optbench {__version__}, Python {sys.version.split()[0]}): "
                f"{type(exc).__name__}: {exc}\nPlease report this with the traceback below.", markup=True)
            err_console.print(traceback.format_exc(), markup=False)
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


fmt_float = fmt_num  # the terminal tables use the shared formatter


def fmt_int(value: Any) -> str:
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return str(int(value))
    except (TypeError, ValueError):
        return "—"


def split_list(text: str) -> list[str]:
    """``'png, gif,'`` → ``['png', 'gif']``: the comma-separated choices of --format, --figures and the like."""
    return [t for t in (s.strip() for s in text.split(",")) if t]
