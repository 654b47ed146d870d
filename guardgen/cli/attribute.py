"""`guardgen attribute`: Open-world GAN attribution. Commands land with issue 5 and later issues."""

from __future__ import annotations

import typer

from guardgen.cli._common import console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 5 (`guardgen attribute fit|discover|predict`)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen attribute[/]: not built yet; lands with {PLANNED}.")
