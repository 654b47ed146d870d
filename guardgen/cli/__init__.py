"""The ``guardgen`` command line: one Typer sub-app per file, mounted here."""

from __future__ import annotations

import typer

from guardgen.cli import attack, attribute, audit, convert, copyright, detect, unlearn, zoo

__all__ = ["app", "main"]

app = typer.Typer(
    name="guardgen",
    help="Safety, unlearning and forensics of image generative models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(zoo.app, name="zoo", help="The built-in zoo of tiny models: list, build, show.")
app.add_typer(unlearn.app, name="unlearn", help="Remove a concept or data from a generative model.")
app.add_typer(detect.app, name="detect", help="AIGC image detectors: train, eval, score.")
app.add_typer(attack.app, name="attack", help="Attacks that stress unlearning and detectors.")
app.add_typer(attribute.app, name="attribute", help="Open-world attribution of images to generators.")
app.add_typer(copyright.app, name="copyright", help="Near access-freeness: shards, CP-k sampling, bounds.")
app.command("audit", help="Audit report on a checkpoint (JSON, HTML, Markdown).", no_args_is_help=True)(audit.audit)
app.command("convert", help="A .pt/.pth/.bin state dict -> .safetensors (read with weights_only=True).", no_args_is_help=True)(convert.convert)


@app.command()
def version() -> None:
    """Print the guardgen version."""
    from guardgen import __version__

    typer.echo(__version__)


def main() -> None:
    app()
