"""The provenance a results directory's manifest records: versions, platform, device, git revision."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from optbench import __version__


def _torch_facts_without_import() -> tuple[str, int, bool]:
    """(torch's version, the intra-op threads it would start with, deterministic mode) without importing it
    (1.3 s): the installed distribution's version; OMP_NUM_THREADS when set, else the CPUs this process
    may use; deterministic mode is off until optbench.determinism (which imports torch) turns it on."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        version = "not installed"
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return version, threads, False


def environment(device: str) -> dict[str, Any]:
    import platform
    import sys

    torch_version: str
    if "torch" in sys.modules or "cuda" in device:
        import torch

        torch_version, threads = torch.__version__, torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()  # optbench.determinism
    else:  # not imported yet (an analytic sweep on the numpy path may never import it): the same facts
        torch_version, threads, deterministic = _torch_facts_without_import()
    env = {"optbench": __version__, "python": sys.version.split()[0], "torch": torch_version,
           "platform": platform.platform(), "machine": platform.machine(), "device": device,
           "threads": threads, "deterministic": deterministic}
    if "cuda" in device and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    revision = git_revision(Path.cwd())
    if revision:
        env["git_revision"] = revision
    return env


def git_revision(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start``, or None outside one.

    Read from ``.git/HEAD`` and the ref it names (loose or packed) without starting ``git``: a subprocess
    costs ~10 ms, which is a tenth of a small batched sweep. Anything unusual (a worktree's ``.git`` file,
    a missing ref) falls back to ``git rev-parse HEAD``.
    """
    import re
    import subprocess

    for directory in (start, *start.parents):
        git = directory / ".git"
        if git.is_dir():
            try:
                head = (git / "HEAD").read_text().strip()
                if re.fullmatch(r"[0-9a-f]{40}", head):  # detached
                    return head
                ref = head.removeprefix("ref: ").strip()
                loose = git / ref
                if loose.is_file():
                    return loose.read_text().strip()
                packed = git / "packed-refs"
                for line in (packed.read_text().splitlines() if packed.is_file() else ()):
                    sha, _, name = line.partition(" ")
                    if name == ref:
                        return sha
            except OSError:
                pass
            break
        if git.exists():  # a worktree or submodule: .git is a file pointing elsewhere
            break
    else:
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=start)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() if rev.returncode == 0 else None
