"""`guardgen attack`: Attacks. Commands land with issue 4 and later issues."""

from __future__ import annotations

import typer

from guardgen.cli._common import console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 4 (on-manifold), issue 6 (`guardgen attack worst-case-forget`), issue 9 (`guardgen attack evade`)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen attack[/]: not built yet; lands with {PLANNED}.")
