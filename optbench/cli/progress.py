"""Progress of every wait of the CLI: sweeps (``run``, the re-runs of ``tune``, ``check``), tuning trials, and work
made of named phases (building a report, writing an export).

One set of rules, in :class:`LiveBar`: a transient bar on stderr, shown only in a terminal, never under ``-q`` or
when the ``CI`` environment variable is set, and only once the wait has lasted ``DELAY_S`` (a timer starts it
then, so a long first step shows too: no wait over about a second goes without saying what is happening).
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

DELAY_S = 0.8  # waits shorter than this show no bar


class LiveBar:
    """A transient rich bar, ``description  bar  completed/total unit  elapsed  [eta remaining]``, following the
    rules of the module docstring. :meth:`show` sets what it says; it appears ``delay_s`` after the first call."""

    def __init__(self, quiet: bool = False, console=None, delay_s: float = DELAY_S, unit: str = "",
                 eta: bool = True):
        self._console = console
        self.quiet = quiet or not self.console.is_terminal or bool(os.environ.get("CI"))
        self.delay_s, self.unit, self.eta = delay_s, unit, eta
        self.start = time.perf_counter()
        self.bar: Progress | None = None
        self.task: TaskID | None = None  # set with bar
        self.timer: threading.Timer | None = None
        self.state = ("", 0.0, 1.0)  # description, completed, total
        self.closed = False
        self.lock = threading.Lock()

    @property
    def console(self):
        """The console given, else stderr's (built on first use: a quiet bar never imports rich)."""
        if self._console is None:
            from optbench.cli.common import err_console

            self._console = err_console
        return self._console

    def show(self, description: str, completed: float, total: float) -> None:
        self.state = (description, completed, max(total, 1))
        if self.quiet:
            return
        with self.lock:
            if self.bar is None and not self.closed:
                wait = self.delay_s - (time.perf_counter() - self.start)
                if wait <= 0:
                    self._start()
                elif self.timer is None:
                    self.timer = threading.Timer(wait, self._start_later)
                    self.timer.daemon = True
                    self.timer.start()
            if self.bar is not None:
                assert self.task is not None  # _start sets both, under the lock
                description, completed, total = self.state
                self.bar.update(self.task, completed=completed, total=total, description=description)

    def _start_later(self) -> None:
        with self.lock:
            if self.bar is None and not self.closed:
                self._start()

    def _start(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        unit = f" {self.unit}" if self.unit else ""
        columns = [TextColumn("{task.description}"), BarColumn(),
                   TextColumn("{task.completed:.0f}/{task.total:.0f}" + unit), TimeElapsedColumn()]
        if self.eta:
            columns += [TextColumn("eta"), TimeRemainingColumn()]
        self.bar = Progress(*columns, console=self.console, transient=True)
        self.bar.start()
        description, completed, total = self.state
        # rich counts progress in floats (Task.completed); only add_task's annotation says int
        self.task = self.bar.add_task(description, total=total, completed=completed)  # type: ignore[arg-type]

    def print(self, text: str) -> None:
        """A line above the bar (or plain on the console before it shows); nothing when quiet."""
        if not self.quiet:
            (self.bar.console if self.bar is not None else self.console).print(text, highlight=False)

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
            if self.bar is not None:
                self.bar.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PhaseProgress(LiveBar):
    """'report: drawing curves  3/8  0:00:12' for work made of named phases; ``self(what, done, total)`` starts
    each phase."""

    def __init__(self, task: str, quiet: bool = False, console=None, delay_s: float = DELAY_S):
        super().__init__(quiet, console, delay_s, eta=False)
        self.task_name = task

    def __call__(self, what: str, done: int, total: int) -> None:
        self.show(f"{self.task_name}: {what}", done, total)


class SweepBar(LiveBar):
    """A sweep: 'sweep 2/5 · runs 12/90 · diverged 3', a bar over optimizer steps, elapsed and remaining time.
    ``advance(steps)`` as steps finish, ``runs_finished(statuses)`` as runs do."""

    def __init__(self, total_steps: int, total_runs: int, quiet: bool, prefix: str = "", console=None,
                 delay_s: float = DELAY_S):
        super().__init__(quiet, console, delay_s, unit="steps")
        self.total, self.total_runs, self.done, self.prefix = total_steps, total_runs, 0, prefix
        self.outcomes: dict[str, int] = {}

    def _runs_text(self) -> str:
        done = sum(self.outcomes.values())
        parts = [f"{self.prefix}runs {done}/{self.total_runs}"]
        parts += [f"{status} {n}" for status, n in sorted(self.outcomes.items()) if status != "done"]
        return " · ".join(parts)

    def advance(self, n: int) -> None:
        self.done += n
        if self.done < self.total or self.bar is not None:  # finished before it showed: no bar at all
            self.show(self._runs_text(), self.done, self.total)

    def runs_finished(self, statuses: list[str]) -> None:
        for status in statuses:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
        self.advance(0)


class SweepProgress:
    """The progress factory of ``run_sweep``; within a suite (or the re-runs of ``tune``), :meth:`begin_sweep`
    before each sweep makes its bar say which sweep of how many it is ('sweep 2/5 · runs 12/90')."""

    def __init__(self, quiet: bool, what: str = "sweep"):
        self.quiet, self.what, self.prefix = quiet, what, ""

    def begin_sweep(self, index: int, count: int) -> None:
        if count > 1:
            self.prefix = f"{self.what} {index}/{count} · "
        else:  # one sweep: a plain run says nothing more; the re-runs of tune still say what they are
            self.prefix = "" if self.what == "sweep" else f"{self.what} · "

    def __call__(self, total_steps: int, total_runs: int) -> SweepBar:
        return SweepBar(total_steps, total_runs, self.quiet, prefix=self.prefix)


class TrialProgress(LiveBar):
    """Tuning: 'tune: study 2/6 · failed 1  ━━━━  37/300 trials  0:00:04  eta 0:00:20' ('studies 3/6 done' when
    processes tune several at once): a bar over the trials of every study, elapsed and remaining time.
    ``begin_study(i, n)`` before each study tuned in this process, ``advance(trials, failed)`` after every round,
    ``study_done()`` as one ends."""

    def __init__(self, total_trials: int, studies: int, quiet: bool, console=None, delay_s: float = DELAY_S):
        super().__init__(quiet, console, delay_s, unit="trials")
        self.total, self.studies = total_trials, studies
        self.done = self.failed = self.studies_done = 0
        self.study: int | None = None  # the study this process tunes now (1-based), None when in parallel

    def _text(self) -> str:
        if self.study is not None:
            where = f"study {self.study}/{self.studies}"
        else:
            where = f"studies {self.studies_done}/{self.studies} done"
        return f"tune: {where}" + (f" · failed {self.failed}" if self.failed else "")

    def begin_study(self, index: int, count: int) -> None:
        self.study, self.studies = index, count
        self.show(self._text(), self.done, self.total)

    def study_done(self) -> None:
        self.studies_done += 1
        self.show(self._text(), self.done, self.total)

    def advance(self, n: int, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        self.show(self._text(), self.done, self.total)
