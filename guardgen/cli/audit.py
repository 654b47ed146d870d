"""`guardgen audit SPEC --out DIR`: an audit report on a checkpoint (report.json, report.html, report.md)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, err_console, guarded, parse_sets, silence
from guardgen.registry import SEED_MAX

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)  # mounted in guardgen.cli as the single command `guardgen audit`

PANEL_INPUTS = "Inputs"
PANEL_BUDGET = "Budget and thresholds"
STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "not run": "dim"}


@app.command()
@guarded
def audit(
    spec: Annotated[str, typer.Argument(help="The model: zoo:mnist-ddpm, a diffusers pipeline folder, a GAN folder, a guardgen run folder.")],
    out: Annotated[Path, typer.Option(help="Report folder (report.json, report.html, report.md, images/).")] = Path("audit"),
    concept: Annotated[list[str], typer.Option(help="Concept to test for leakage: a class id (7), a phrase, or 'PHRASE=CLASS' (repeatable); default: what the run forgot.", rich_help_panel=PANEL_INPUTS)] = [],
    train_data: Annotated[Optional[str], typer.Option(help="Training data: 'mnist' or an image folder at the model's resolution; default: mnist for zoo models.", rich_help_panel=PANEL_INPUTS)] = None,
    holdout_data: Annotated[Optional[str], typer.Option(help="Held-out (non-member) images of the same distribution: an image folder, or mnist (its test split).", rich_help_panel=PANEL_INPUTS)] = None,
    oracle: Annotated[str, typer.Option(help="Classifier that judges samples and gives FD features ('' for none).", rich_help_panel=PANEL_INPUTS)] = "zoo:mnist-oracle",
    detector: Annotated[Optional[str], typer.Option(help="Detector folder (guardgen detect train) for the forensics section.", rich_help_panel=PANEL_INPUTS)] = None,
    attribution: Annotated[Optional[str], typer.Option(help="Attribution model folder (guardgen attribute fit) for the forensics section.", rich_help_panel=PANEL_INPUTS)] = None,
    shards: Annotated[Optional[tuple[str, str]], typer.Option(help="Two shard models for the copyright (NAF) section.", rich_help_panel=PANEL_INPUTS)] = None,
    config: Annotated[Optional[Path], typer.Option(help="JSON file with budgets and thresholds (see report.json 'config').", rich_help_panel=PANEL_BUDGET)] = None,
    set_: Annotated[list[str], typer.Option("--set", help="KEY=VALUE: a budget (samples_per_class=20) or a threshold (thresholds.membership.auroc.fail=0.8).", rich_help_panel=PANEL_BUDGET)] = [],
    seed: Annotated[Optional[int], typer.Option(min=0, max=SEED_MAX, help="Random seed (default: the config's, 0).", rich_help_panel=PANEL_BUDGET)] = None,
    fail_on: Annotated[str, typer.Option(help="Exit 1 when the overall verdict is at least this: fail, warn or never.", rich_help_panel=PANEL_BUDGET)] = "never",
) -> None:
    """Audit a generative checkpoint: provenance, quality, concept leakage, memorization, membership inference,
    copyright, forensics and pass/warn/fail verdicts, written as JSON, self-contained HTML and Markdown."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from guardgen.audit import AuditConfig, run_audit, write_report
    from guardgen.audit.summary import key_figure
    from guardgen.checkpoint import check_out
    from guardgen.errors import GuardgenError

    check_out(out, replaces=False, data={"--train-data": train_data, "--holdout-data": holdout_data})
    if fail_on not in ("fail", "warn", "never"):
        raise GuardgenError(f"--fail-on {fail_on!r}: use fail, warn or never")
    sets = parse_sets(set_)
    if seed is not None:
        sets["seed"] = seed
    cfg = AuditConfig.from_sources(config, sets)
    parts = ["guardgen", "audit", spec, "--out", str(out)] + [x for c in concept for x in ("--concept", c)]
    for flag, value in (("--train-data", train_data), ("--holdout-data", holdout_data), ("--detector", detector),
                        ("--attribution", attribution), ("--config", config)):
        parts += [flag, str(value)] if value else []
    parts += ["--oracle", oracle] if oracle != "zoo:mnist-oracle" else []
    parts += ["--shards", *shards] if shards else []
    parts += [x for item in set_ for x in ("--set", item)] + (["--seed", str(seed)] if seed is not None else [])
    command = " ".join(shlex.quote(str(a)) for a in parts)
    columns = [TextColumn("[bold]{task.description:<14}"), BarColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=False) as progress:
        tasks = {}

        def callback(step: int, logs: dict) -> None:
            name = logs["section"]
            if logs["event"] == "start":
                tasks[name] = progress.add_task(name, total=1, info="")
            else:
                progress.update(tasks[name], completed=1, info=f"{logs['status']}, {logs['seconds']:.1f} s")

        try:
            report, sections = run_audit(spec, concepts=concept, train_data=train_data, holdout_data=holdout_data,
                                         oracle=oracle or None, detector=detector, attribution=attribution,
                                         shards=list(shards or ()), config=cfg, callback=callback,
                                         command=command)
        except GuardgenError:
            if not tasks:  # refused before any section: the error line alone
                silence(progress)
            raise
    paths = write_report(report, sections, out)
    verdicts = report["verdicts"]
    table = Table(title=f"audit of {escape(spec)}: overall {verdicts['overall']}")
    for col, justify in (("section", "left"), ("verdict", "left"), ("key figure, or why not run", "left"), ("seconds", "right")):
        table.add_column(col, justify=justify)
    for name, s in sections.items():
        status = verdicts["sections"].get(name, {}).get("status", "info")
        table.add_row(s.title, f"[{STYLES.get(status, '')}]{status}[/]" if status in STYLES else status,
                      escape(key_figure(name, s)), f"{s.seconds:.1f}")
    console.print(table)
    console.print(f"report: {escape(str(paths['html']))}  ({escape(str(paths['json']))}, {escape(str(paths['md']))})")
    order = {"never": 99, "warn": 3, "fail": 4}
    rank = {"pass": 2, "info": 1, "warn": 3, "fail": 4}
    if rank.get(verdicts["overall"], 0) >= order[fail_on]:
        raise typer.Exit(1)

