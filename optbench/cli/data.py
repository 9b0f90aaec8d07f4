"""``optbench data``: download, import and list the datasets of the network track."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, err_console, errors_handled

app = typer.Typer(help="Datasets for the network problems: fetch (download and verify), import local files, "
                       "list what is present. Data directory: $OPTBENCH_DATA, else ~/.cache/optbench.",
                  no_args_is_help=True)

_STYLE = {"verified": "green", "unofficial": "yellow", "missing": "red"}


def _report(status) -> None:
    style = _STYLE[status.state]
    console.print(f"{status.info.name}: [{style}]{status.state}[/] in {status.directory}"
                  + (f" ({status.detail})" if status.detail else ""))
    if status.state == "unofficial":
        console.print("  Runs on these files carry a warning: results are not comparable with the official data.")


@app.command("fetch")
@errors_handled
def fetch(
    names: Annotated[list[str], typer.Argument(help="Datasets to download: mnist, fashion-mnist, cifar10, cifar100, "
                                                      "tiny-shakespeare.")],
    force: Annotated[bool, typer.Option(help="Download again even when verified files are present.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download datasets from their official mirrors, verifying SHA-256 (set $OPTBENCH_DATA_MIRROR to use
    another base URL: <mirror>/<dataset>/<file>)."""
    from optbench.data.fetch import fetch_dataset
    from optbench.data.store import get_dataset_info

    for name in names:
        get_dataset_info(name)  # every name is checked before any download
    for name in names:
        _report(fetch_dataset(name, force=force, progress=not quiet))


@app.command("import")
@errors_handled
def import_(
    name: Annotated[str, typer.Argument(help="Dataset name: mnist, fashion-mnist, cifar10, cifar100, "
                                                "tiny-shakespeare, text (any text file).")],
    path: Annotated[Path, typer.Argument(help="A folder with the IDX files (e.g. torchvision's MNIST/raw or its "
                                              "parent), or the CIFAR python tarball, or its extracted folder, or "
                                              "a text file.")],
) -> None:
    """Install dataset files you already have into the data directory."""
    from optbench.data.fetch import import_dataset

    _report(import_dataset(name, path))


@app.command("list")
@errors_handled
def list_(json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Show each dataset's state (verified, unofficial, missing) in the data directory."""
    from rich.table import Table

    from optbench.data.fetch import list_datasets
    from optbench.data.store import data_root

    root, how = data_root()
    statuses = list_datasets(root)
    if json_out:
        print(json.dumps({"data_dir": str(root), "from": how, "datasets": [
            {"name": s.info.name, "state": s.state, "directory": str(s.directory), "detail": s.detail,
             "size_bytes": s.size_bytes if s.state != "missing" else None} for s in statuses]}, indent=2))
        return
    table = Table(title=f"Datasets in {root} ({how})")
    for col in ("dataset", "state", "size", "detail"):
        table.add_column(col)
    for s in statuses:
        size = f"{s.size_bytes / 1e6:.1f} MB" if s.state != "missing" else "—"
        table.add_row(s.info.name, f"[{_STYLE[s.state]}]{s.state}[/]", size, s.detail)
    console.print(table)
    if any(s.state == "missing" for s in statuses):
        err_console.print("Get a dataset with `optbench data fetch NAME` or `optbench data import NAME PATH`.")
