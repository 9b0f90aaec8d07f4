"""Progress of waits that are not sweeps: the phases of building a report, writing an export."""

from __future__ import annotations

import os
import time


class PhaseProgress:
    """A transient bar on stderr, 'report: drawing curves  3/8  0:00:12', for work made of named phases; the
    callback ``self(what, done, total)`` starts each phase. Shown only in a terminal, when not quiet and not in CI
    (as ``optbench run``'s bar), and only once the work has taken ``delay_s``."""

    def __init__(self, task: str, quiet: bool = False, console=None, delay_s: float = 0.0):
        from optbench.cli.common import err_console

        self.console = console or err_console
        self.task_name, self.delay_s = task, delay_s
        self.quiet = quiet or not self.console.is_terminal or bool(os.environ.get("CI"))
        self.bar = None
        self.start = time.perf_counter()
        self.last = ("starting", 0, 1)

    def __call__(self, what: str, done: int, total: int) -> None:
        self.last = (what, done, total)
        if self.quiet:
            return
        if self.bar is None and time.perf_counter() - self.start >= self.delay_s:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed:.0f}/{task.total:.0f}"), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("", total=total)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, description=f"{self.task_name}: {what}")

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
