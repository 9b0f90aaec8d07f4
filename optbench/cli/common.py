"""What every command shares: the error boundary, consoles, and small formatters."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from optbench.errors import os_error_message

if TYPE_CHECKING:
    from rich.console import Console

    console: Console
    err_console: Console

# Outside a terminal (pipes, CI logs) rich would assume 80 columns and squeeze the tables; COLUMNS, when set, wins.
# emoji=False: user input such as '--device cuda:abc' must print as typed, not as the emoji ':abc:' names.
_PIPE_WIDTH = None if "COLUMNS" in os.environ else 140
_CONSOLES = {"console": False, "err_console": True}  # name: writes to stderr


def __getattr__(name: str) -> Any:
    """``console`` (stdout) and ``err_console`` (stderr), each built on first use: importing rich (~30 ms) is then
    paid by a command that prints, not by ``optbench run -q``."""
    if name not in _CONSOLES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    stderr = _CONSOLES[name]
    stream = sys.stderr if stderr else sys.stdout
    built = Console(stderr=stderr, highlight=False, emoji=False, width=None if stream.isatty() else _PIPE_WIDTH)
    globals()[name] = built
    return built


def _err_console() -> Console:
    built = globals().get("err_console")
    return __getattr__("err_console") if built is None else built


def _escape(text: str) -> str:
    """Text shown as typed inside rich markup: messages quote "[[sweep]]", "[tune]"."""
    from rich.markup import escape

    return escape(text)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
MAX_MESSAGE_CHARS = 2000  # an error echoing a 100 kB spec back is no help: the middle is cut

class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by timeout, SLURM, docker stop, CI runners) delivered as an interrupt, so it unwinds
    exactly like Ctrl-C: finished runs are kept, worker processes are stopped."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def shorten(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` with its middle cut past ``limit`` characters, saying how much was left out."""
    if len(message) <= limit:
        return message
    head, tail = message[: limit * 3 // 4], message[-limit // 4:]
    return f"{head} … [{len(message) - len(head) - len(tail)} characters left out] … {tail}"


def quiet_broken_pipe() -> None:
    """stdout's reader went away (``optbench list --json | head -1``): stop writing, as Unix tools do.
    Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def errors_handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Map optbench's exceptions to one clear message and an exit code (2: usage, 1: internal)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from optbench.errors import OptbenchError, OptbenchWarning, UsageError, UserCodeError

        previous = None
        if threading_is_main():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", OptbenchWarning)
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except UserCodeError as exc:
            _err_console().print(f"[bold red]Error in your code:[/] {_escape(shorten(str(exc)))}", markup=True)
            if exc.user_traceback:
                _err_console().print(exc.user_traceback, markup=False)
            raise typer.Exit(EXIT_USAGE) from None
        except UsageError as exc:
            _err_console().print(f"[bold red]Error:[/] {_escape(shorten(str(exc)))}", markup=True)
            raise typer.Exit(EXIT_USAGE) from None
        except OptbenchError as exc:
            _err_console().print(f"[bold red]Failed:[/] {_escape(shorten(str(exc)))}", markup=True)
            raise typer.Exit(EXIT_FAILURE) from None
        except KeyboardInterrupt as exc:
            how = "Terminated (SIGTERM)" if isinstance(exc, Terminated) else "Interrupted"
            _err_console().print(f"{how}: finished runs are saved; run the same command again to resume.")
            raise typer.Exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            quiet_broken_pipe()
            raise typer.Exit(EXIT_FAILURE) from None
        except MemoryError as exc:
            _err_console().print(f"[bold red]Error:[/] out of memory ({_escape(shorten(str(exc) or 'MemoryError'))}); "
                                 "use a smaller sweep: fewer steps, runs or workers.", markup=True)
            raise typer.Exit(EXIT_USAGE) from None
        except OSError as exc:  # the environment (disk full, permissions, ...), not a bug: one sentence
            message = os_error_message(exc)
            if message is None:
                _internal_error(exc)
            _err_console().print(f"[bold red]Error:[/] {_escape(message)}", markup=True)
            raise typer.Exit(EXIT_USAGE) from None
        except Exception as exc:  # an optbench bug: say so, with what is needed to report it
            _internal_error(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """optbench's warnings as one line on stderr (``Note: …``); others as Python prints them."""
    from optbench.errors import OptbenchWarning

    if issubclass(category, OptbenchWarning):
        _err_console().print(f"Note: {shorten(str(message))}", markup=False)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _internal_error(exc: BaseException) -> NoReturn:
    from optbench import __version__

    _err_console().print(
        f"[bold red]Internal error[/] (optbench {__version__}, Python {sys.version.split()[0]}): "
        f"{type(exc).__name__}: {shorten(str(exc))}\nPlease report this with the traceback below.", markup=True)
    _err_console().print(traceback.format_exc(), markup=False)
    raise typer.Exit(EXIT_FAILURE) from None


def split_list(text: str) -> list[str]:
    """``'png, gif,'`` → ``['png', 'gif']``: the comma-separated choices of --format, --figures and the like."""
    return [t for t in (s.strip() for s in text.split(",")) if t]


def _figure_names() -> str:
    from optbench.report.figures import figures_help

    return figures_help()


def _protocol_names() -> str:
    from optbench.tuning.protocols import PROTOCOLS

    return ", ".join(p.name + (f" ({p.fixed_trials} trials)" if p.fixed_trials else "") for p in PROTOCOLS.list())


def _pruner_names() -> str:
    from optbench.tuning.protocols import PRUNERS

    return ", ".join(PRUNERS.names())


# Help texts name registries with these placeholders; the names are filled in when help is shown (listing the
# figures imports the figure modules, which ``optbench`` must not pay for on every command).
REGISTRY_HELP = {"{figures}": _figure_names, "{protocols}": _protocol_names, "{pruners}": _pruner_names}


def fill_registry_help(command) -> None:
    """Make every option of ``command`` (and its subcommands) whose help holds a ``REGISTRY_HELP`` placeholder
    show the registry's names there when help is rendered."""
    import types

    for param in getattr(command, "params", []):
        help_text = getattr(param, "help", None)
        if help_text and any(key in help_text for key in REGISTRY_HELP):
            param.get_help_record = types.MethodType(_help_record_with_names, param)
    for sub in getattr(command, "commands", {}).values():
        fill_registry_help(sub)


def _help_record_with_names(param, ctx):
    template = param.help
    filled = template
    for key, names in REGISTRY_HELP.items():
        if key in filled:
            filled = filled.replace(key, names())
    param.help = filled
    try:
        return type(param).get_help_record(param, ctx)
    finally:
        param.help = template
