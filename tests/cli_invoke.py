"""Run an ``optbench`` command in-process (click's CliRunner on the command ``optbench`` runs): the exit code,
stdout and stderr a user would see, without paying a Python + torch start-up per call. One real-subprocess
test per command lives beside (test_cli.py, test_report.py, test_tune.py, test_check_cli.py)."""

from __future__ import annotations

from click.testing import CliRunner


def invoke(*args, env: dict[str, str] | None = None):
    """``optbench ARGS`` in this process; returns click's Result (exit_code, stdout, stderr, output)."""
    from optbench.cli.app import command

    return CliRunner().invoke(command(), [str(a) for a in args], env=env, catch_exceptions=False)
