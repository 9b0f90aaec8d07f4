"""The command-line interface: a thin typer shell, one module per command."""
