"""The ``guardgen`` command line: one Typer sub-app per file, mounted here."""

from __future__ import annotations

import typer
from rich.markup import escape

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
    """The ``guardgen`` script: as ``app()``, but a usage error (an unknown option, a value out of range) is one line
    on stderr with exit code 2, like guardgen's own errors, not Typer's boxed block."""
    import sys

    from guardgen.cli._common import err_console

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err_console.print("aborted")
        code = 1
    except typer.TyperException as err:  # click's usage errors (typer vendors click; this is their public base)
        code = getattr(err, "exit_code", 2)
        if type(err).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            ctx = getattr(err, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            message = " ".join(err.format_message().split())
            err_console.print(f"[bold red]error:[/] {escape(message)}{escape(hint)}", soft_wrap=True, highlight=False,
                              emoji=False)
    sys.exit(code if isinstance(code, int) else 0)
