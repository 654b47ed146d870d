"""`guardgen copyright`: Near access-freeness. Commands land with issue 7 and later issues."""

from __future__ import annotations

import typer

from guardgen.cli._common import console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 7 (`guardgen copyright shard|train|sample|bound`)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen copyright[/]: not built yet; lands with {PLANNED}.")
