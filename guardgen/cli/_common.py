"""What every CLI group shares: consoles, one-line errors (exit 2), progress bars, tables."""

from __future__ import annotations

import functools
import inspect
import math
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from guardgen.errors import GuardgenError

__all__ = ["console", "err_console", "guarded", "parse_sets", "progress_callback", "results_table", "fail", "note_fresh",
           "silence", "OWNED"]

OWNED = ".guardgen"  # marks an --out folder as guardgen's: a later run may replace it
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on stderr (one line) and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False, emoji=False)
    raise typer.Exit(code)


def guarded(fn: Callable) -> Callable:
    """Turn user errors into one line on stderr and exit code 2; Ctrl-C into exit 130 (with a resume hint where the
    command has ``--resume``)."""
    resumable = "resume" in inspect.signature(fn).parameters

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for name, value in kwargs.items():  # typer takes "inf" and "nan" as floats; no option means them
            if isinstance(value, float) and not math.isfinite(value):
                fail(f"--{name.rstrip('_').replace('_', '-')} {value}: must be a finite number")
        out = kwargs.get("out")
        owned = isinstance(out, Path)
        if owned and out.exists() and not out.is_dir():
            fail(f"--out {out}: a file, not a folder")
        if owned and out.is_dir() and not (out / OWNED).exists() and next(out.iterdir(), None) is not None:
            fail(f"--out {out}: a folder guardgen did not write, and not empty; pass a new or empty folder "
                 "(a run's result replaces its --out)")
        try:
            if owned:  # a file on its path, or a folder it cannot write: refused before the run, not at its end
                from guardgen.checkpoint import check_out

                check_out(out, replaces=False)  # a command whose result replaces --out checks its parent too
            if isinstance(kwargs.get("device"), str):
                from guardgen.utils import check_device

                check_device(kwargs["device"], kwargs.get("mixed_precision") or "no")
            return fn(*args, **kwargs)
        except GuardgenError as err:
            fail(str(err).splitlines()[0] if str(err) else "bad input")
        except OSError as err:
            if err.filename is None:  # not about a path the user gave: a real bug, keep its traceback
                raise
            fail(f"{err.filename}: {err.strerror or err}")
        except FloatingPointError as err:
            fail(f"training diverged: {err}")
        except KeyboardInterrupt:
            hint = "; rerun with --resume to continue" if resumable else ""
            err_console.print(f"[yellow]interrupted[/]: finished files are kept{hint}")
            raise typer.Exit(130)
        finally:  # what is in --out now is this run's (or an earlier run's): mark it so, for the next run
            if owned and out.is_dir():
                try:
                    (out / OWNED).touch()
                except OSError:  # a folder it cannot write to: the run's own error says so
                    pass

    return wrapper


@contextmanager
def progress_callback(description: str, total: int | None = None, keys: tuple[str, ...] = ("loss",)) -> Iterator[Callable]:
    """A rich progress bar driven by a method's ``callback(step, logs)``; logs may carry ``total``."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        stepped = False

        def callback(step: int, logs: dict) -> None:
            nonlocal stepped
            stepped = True
            info = "  ".join(f"{k} {logs[k]:.4g}" for k in keys if isinstance(logs.get(k), (int, float)))
            progress.update(task, completed=step, total=logs.get("total", total), info=info)

        try:
            yield callback
        except GuardgenError:
            if not stepped:  # refused before the first step: the error line alone, not an empty bar (or line) above it
                silence(progress)
            raise


def silence(progress: Progress) -> None:
    """Stop a progress display that showed nothing yet without a trace (Progress.stop would print a blank line on a
    non-interactive console), so a refusal is the error line alone."""
    for task in progress.task_ids:
        progress.update(task, visible=False)
    progress.live.transient = True
    progress.live.stop()
    progress.disable = True


def results_table(title: str, rows: list[dict], columns: list[str] | None = None) -> Table:
    """A rich table from a list of row dicts (floats shown with 4 significant digits; numbers right-aligned, text
    left-aligned)."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for col in columns:
        values = [row[col] for row in rows if row.get(col) not in (None, "")]
        numeric = col != columns[0] and all(_numeric(v) for v in values)
        if col == columns[0]:  # the row's name (a model, a method, a generator): never cut, it is what users type
            width = max([len(col)] + [len(str(v)) for v in values])
            table.add_column(col, no_wrap=True, min_width=width)
        else:
            table.add_column(col, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        cells = []
        for col in columns:
            v = row.get(col, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else escape(str(v)))
        table.add_row(*cells)
    return table


def _numeric(value) -> bool:
    """A number, or text that starts with one ("0.977 (128)", "-0.021 [-0.024, -0.018]", "nan")."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or (isinstance(value, str) and re.match(r"[-+]?(\d|\.\d|nan\b|inf\b)", value) is not None)


def parse_sets(values: list[str]) -> dict:
    """``["KEY=VALUE", ...]`` -> a dict; values are JSON when they parse (numbers, lists), else strings."""
    import json

    out = {}
    for item in values:
        if "=" not in item:
            raise GuardgenError(f"--set {item!r}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out


def note_fresh(out: Path, resume: bool, *states: str, replaces: bool = True, note: bool = True) -> None:
    """--resume: ``states`` (paths under ``out``) are where this run keeps its state. Where none exists and the result
    ``replaces`` --out, another run's interrupted state in ``out`` (another command's or method's, kept elsewhere) is
    refused: this run would not continue it, and would replace it. With none at all (a mistyped --out?), say so
    (``note``) and train from the start. Hidden entries (a save cut off by a hard kill) are no other run's state."""
    states = states or ("training_state/state.json",)
    if not resume or any((out / s).exists() for s in states):
        return
    for other in (out / "training_state", out / "retrained" / "training_state") if replaces else ():
        if other.is_dir() and any(not p.name.startswith(".") for p in other.iterdir()):
            raise GuardgenError(f"--out {out}: holds another run's interrupted state ({other.relative_to(out)}/), which "
                                "this command or method does not continue and would replace; resume it with the command "
                                "and --method that made it, or pass another --out")
    if note:
        where = states[0].removesuffix("/state.json")
        err_console.print(f"[yellow]note[/]: nothing to resume in {out} (no {where}/); training from the start")
