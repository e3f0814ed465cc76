"""The ``aibill`` command line (Typer and Rich). See docs/cli.md."""

from aibill.cli.app import app, main

__all__ = ["app", "main"]
