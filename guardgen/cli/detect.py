"""`guardgen detect`: AIGC detectors. Commands land with issue 4 and later issues."""

from __future__ import annotations

import typer

from guardgen.cli._common import console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 4 (`guardgen detect train|eval|score`, OMAT)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen detect[/]: not built yet; lands with {PLANNED}.")
