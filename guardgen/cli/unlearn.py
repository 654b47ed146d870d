"""`guardgen unlearn`: remove a concept from a generative model and show the result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded, parse_sets, progress_callback, results_table

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PANEL_METHOD = "Method"
PANEL_EVAL = "Evaluation"


@app.command()
def methods() -> None:
    """List the unlearning methods (registry keys, also the --method names)."""
    from unlearn import UNLEARN

    rows = []
    for name in UNLEARN.names():
        cls = UNLEARN.get(name)
        doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "").strip().splitlines()[0]
        rows.append({"method": name, "class": cls.__name__, "description": doc})
    console.print(results_table("unlearning methods", rows))


@app.command()
@guarded
def concept(
    model: Annotated[str, typer.Option(help="Model spec: zoo:mnist-ddpm, zoo:mnist-t2i, a diffusers folder, hf:ORG/NAME.")],
    forget: Annotated[list[str], typer.Option(help="Concept to forget: a class id (7) or a prompt (repeatable).")],
    override: Annotated[list[str], typer.Option(help="What the forgotten concept becomes: a class id or prompt.")] = [],
    retain: Annotated[list[str], typer.Option(help="Retained prompts (text models) [default: the model's own prompts].")] = [],
    expand: Annotated[bool, typer.Option(help="Text models: also forget the model's other known phrasings of the concept.")] = True,
    method: Annotated[str, typer.Option(help="Unlearning method (see `guardgen unlearn methods`).", rich_help_panel=PANEL_METHOD)] = "sfd",
    iterations: Annotated[Optional[int], typer.Option(help="Training iterations [default: the method's].", rich_help_panel=PANEL_METHOD)] = None,
    override_mode: Annotated[str, typer.Option(help="SFD override: fixed, random or oracle.", rich_help_panel=PANEL_METHOD)] = "",
    set_: Annotated[list[str], typer.Option("--set", help="Any method hyperparameter: KEY=VALUE.", rich_help_panel=PANEL_METHOD)] = [],
    out: Annotated[Path, typer.Option(help="Run folder (the unlearned pipeline, run.json, results.json, grid.png).")] = Path("runs/unlearn"),
    oracle: Annotated[str, typer.Option(help="Classifier that judges samples.", rich_help_panel=PANEL_EVAL)] = "zoo:mnist-oracle",
    eval_per_class: Annotated[int, typer.Option(help="Samples per condition for the before/after table.", rich_help_panel=PANEL_EVAL)] = 50,
    evaluate: Annotated[bool, typer.Option(help="Score before and after with the oracle.", rich_help_panel=PANEL_EVAL)] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16.")] = "no",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
) -> None:
    """Unlearn a concept (class or prompt) from a diffusion model; print before/after figures and save a grid."""
    from rich.markup import escape

    from guardgen import __version__
    from guardgen.checkpoint import save_json
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve
    from guardgen.models.conditioning import conditioning_for
    from guardgen.models.diffusion import save_pipeline
    from unlearn import UNLEARN
    from unlearn.evaluate import concept_plan, evaluate_before_after

    ref = resolve(model)
    if ref.kind not in ("pipeline",):
        raise GuardgenError(f"{model}: holds a {ref.kind}; unlearn concept needs a diffusion pipeline folder")
    cls = UNLEARN.get(method)
    pipe = load_model(model, device="cpu")
    cond = conditioning_for(pipe)
    judge = load_model(oracle, kind="classifier") if evaluate or override_mode == "oracle" else None
    plan = concept_plan(pipe, cond, forget=forget, override=override, retain=retain, expand=expand)
    params = {"seed": seed, "device": device, "mixed_precision": mixed_precision, **parse_sets(set_)}
    if iterations is not None:
        params["iterations" if method != "retrain" else "steps"] = iterations
    if override_mode:
        params["override"] = override_mode
    if method == "retrain":
        params.pop("iterations", None)
        params["zoo_name"] = model[4:] if ref.source == "zoo" else ""
    if method == "sfd" and "teacher_guidance" not in params:
        meta = ref.path / "guardgen.json"
        params["teacher_guidance"] = json.loads(meta.read_text()).get("sampling", {}).get("guidance_scale", 1.0) if meta.is_file() else 1.0
    known = set(cls.__dataclass_fields__)
    unknown = set(params) - known
    if unknown:
        raise GuardgenError(f"{method}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(k for k in known if not k.endswith('_')))}")
    runner = cls(**params)
    console.print(f"unlearning {plan['forget']} from [bold]{escape(model)}[/] with [bold]{method}[/] -> {out}")
    keys = ("loss_gen", "loss_fake", "loss", "loss_forget")
    with progress_callback(f"{method}", keys=keys) as callback:
        runner.fit(pipe, forget=plan["forget"], retain=plan["retain"], override=plan["override"], oracle=judge,
                   callback=callback, out=out, resume=resume)
    unlearned = runner.to_pipeline(pipe)
    save_pipeline(unlearned, out)
    run = {"guardgen_version": __version__, "method": method, "original_model": model, "original_path": str(ref.path),
           "forget": plan["forget"], "override": plan["override"], "retain": plan["retain"],
           "hyperparameters": {k: v for k, v in vars(runner).items() if not k.endswith("_")},
           "train_seconds": getattr(runner, "train_seconds_", None), "seed": seed}
    save_json(run, out / "run.json")
    if not evaluate:
        console.print(f"saved to {out} (not evaluated)")
        return
    results = evaluate_before_after(pipe, unlearned, judge, plan, per_condition=eval_per_class, seed=seed, grid=out / "grid.png",
                                    original_steps=50, original_guidance=params.get("teacher_guidance", 1.0))
    results["train_seconds"] = run["train_seconds"]
    save_json(results, out / "results.json")
    shown = ("forget_rate", "paraphrase_forget_rate", "override_rate", "retain_accuracy", "fd_retained", "recall_retained",
             "samples_per_second")
    rows = [{"metric": k, "before": results["before"][k], "after": results["after"][k]}
            for k in shown if k in results["before"] and k in results["after"]]
    console.print(results_table(f"{method}: forgetting {plan['forget']}", rows))
    console.print(f"grid (rows = conditions; left: before, right: after): {out / 'grid.png'}\nsaved to {out}")

