"""`guardgen unlearn`: Unlearning methods for diffusion models and GANs. Commands land with issue 3 and later issues."""

from __future__ import annotations

import typer

from guardgen.cli._common import console

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 3 (SFD, ESD, GA, retrain: `guardgen unlearn concept`), issue 5 (Adapt-then-Unlearn), issue 7 (`guardgen unlearn redact`)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen unlearn[/]: not built yet; lands with {PLANNED}.")
