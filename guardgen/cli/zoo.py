"""`guardgen zoo`: list, build and show the built-in tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded, note_fresh, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)


def _parse_classes(text: str) -> tuple[int, ...]:
    from guardgen.errors import GuardgenError

    try:
        classes = tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise GuardgenError(f"--exclude {text!r}: expected class ids like 7 or 3,7") from None
    if any(c < 0 or c > 9 for c in classes):
        raise GuardgenError(f"--exclude {text!r}: class ids are 0..9")
    return classes


@app.command("list")
@guarded
def list_() -> None:
    """List the zoo models, where their weights are, and their headline figures."""
    from guardgen.checkpoint import load_json
    from guardgen.zoo import ZOO, zoo_path

    rows = []
    for name, entry in sorted(ZOO.items()):
        try:
            path = zoo_path(name)
            status = "user" if os.environ.get("GUARDGEN_ZOO_DIR") and str(path).startswith(os.environ["GUARDGEN_ZOO_DIR"]) else "shipped"
            meta = path / ("results.json" if (path / "results.json").is_file() else "guardgen.json")
            m = load_json(meta) if meta.is_file() else {}
            m = m.get("metrics", m)
            figure = m.get("test_accuracy", m.get("conditional_accuracy", ""))
        except Exception:  # noqa: BLE001 - a model without weights is listed as such
            status, figure = "not built", ""
        rows.append({"name": name, "kind": entry.kind, "weights": status,
                     "accuracy": figure, "description": entry.description})
    console.print(results_table("guardgen zoo", rows))


@app.command()
@guarded
def build(
    name: Annotated[str, typer.Argument(help="Zoo model to build (see `guardgen zoo list`).")],
    out: Annotated[Optional[Path], typer.Option(help="Output folder.", show_default="$GUARDGEN_ZOO_DIR/NAME or runs/zoo/NAME")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Training steps (diffusion models).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Training epochs (classifiers).")] = None,
    exclude: Annotated[str, typer.Option(help="Classes to leave out of the training data, e.g. 7 or 3,7 (retrain baseline).")] = "",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16 (GPU).")] = "no",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted build from its training_state/.")] = False,
    set_: Annotated[list[str], typer.Option("--set", help="Override any config field: KEY=VALUE (repeatable).")] = [],
) -> None:
    """Train a zoo model from scratch, seeded and reproducible, into a folder."""
    from guardgen import zoo
    from guardgen.checkpoint import check_out

    overrides = {"seed": seed, "device": device, "mixed_precision": mixed_precision, **parse_sets(set_)}
    if steps is not None:
        overrides["steps"] = steps
    if epochs is not None:
        overrides["epochs"] = epochs
    if exclude:
        overrides["exclude"] = _parse_classes(exclude)
    zoo.settings(name, overrides)  # bad settings fail here, before the progress bar
    user_dir = zoo.user_zoo_dir()
    out = out or ((user_dir / name) if user_dir else Path("runs/zoo") / name)
    check_out(out)
    main_process = int(os.environ.get("RANK", "0")) == 0  # before the accelerator exists (it picks cpu/gpu itself)
    if main_process:
        console.print(f"building [bold]{name}[/] into {out}")
        note_fresh(out, resume)
    with progress_callback(f"zoo build {name}") as callback:
        metrics = zoo.build(name, out, resume=resume, callback=callback if main_process else None, **overrides)
    if main_process:
        shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        console.print(results_table(f"{name}: metrics", [{"metric": k, "value": v} for k, v in shown.items()]))
        console.print(f"saved to {out}")


@app.command()
@guarded
def show(
    name: Annotated[str, typer.Argument(help="Zoo model, or any spec (zoo:NAME, folder).")],
    out: Annotated[Path, typer.Option(help="Folder for the sample grid PNG and results.json.")] = Path("runs/show"),
    per_class: Annotated[int, typer.Option(min=1, help="Samples per class.")] = 10,
    steps: Annotated[int, typer.Option(min=1, help="Sampling steps (DDIM).")] = 50,
    guidance_scale: Annotated[Optional[float], typer.Option(min=0.0, help="Classifier-free guidance (0: unconditional, 1: none).", show_default="the model's")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    oracle: Annotated[str, typer.Option(help="Classifier that scores the samples.")] = "zoo:mnist-oracle",
) -> None:
    """Sample a grid from a model (rows = classes), score it with the oracle, and save a PNG."""
    import time

    import torch

    from guardgen.checkpoint import check_out, save_json
    from guardgen.data import load_mnist
    from guardgen.data.generated import save_grid
    from guardgen.metrics import accuracy, class_rates
    from guardgen.models import load_model, resolve
    from guardgen.models.diffusion import sample_images
    from guardgen.utils import predict_logits

    spec = name if (":" in name or "/" in name or Path(name).exists()) else f"zoo:{name}"
    ref = resolve(spec)
    check_out(out, {"the model": ref.path, "--oracle": resolve(oracle).path}, replaces=False)
    judge = load_model(oracle, kind="classifier")
    out.mkdir(parents=True, exist_ok=True)
    if ref.kind == "classifier":
        model = load_model(spec)
        test = load_mnist("test")
        logits = predict_logits(model, test.images)
        idx = torch.cat([torch.nonzero(test.labels == c).flatten()[:per_class] for c in range(10)])
        grid = save_grid(test.images[idx], out / "grid.png", nrow=per_class)
        results = {"spec": spec, "test_accuracy": accuracy(logits, test.labels), "per_class": class_rates(logits, test.labels)}
    elif ref.kind == "pipeline":
        pipe = load_model(spec)
        prompts = getattr(pipe.config, "prompts", None)
        if guidance_scale is None:
            meta = ref.path / "guardgen.json"
            guidance_scale = json.loads(meta.read_text()).get("sampling", {}).get("guidance_scale", 1.0) if meta.is_file() else 1.0
        labels = torch.arange(10).repeat_interleave(per_class)
        conditions = [prompts[str(c)][0] for c in labels.tolist()] if prompts else labels
        t0 = time.perf_counter()
        with progress_callback(f"sampling {spec}", total=1) as cb:
            images = sample_images(pipe, conditions, num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed)
            cb(1, {})
        seconds = time.perf_counter() - t0
        logits = predict_logits(judge, images)
        grid = save_grid(images, out / "grid.png", nrow=per_class)
        results = {"spec": spec, "conditional_accuracy": accuracy(logits, labels), "per_class": class_rates(logits, labels),
                   "samples_per_second": len(labels) / seconds, "steps": steps, "guidance_scale": guidance_scale, "seed": seed}
    else:
        from guardgen.errors import GuardgenError

        raise GuardgenError(f"{spec}: `zoo show` draws classifiers and class-conditional pipelines, not a {ref.kind}")
    save_json(results, out / "results.json")
    rows = [{"class": c, "oracle agrees": v} for c, v in results["per_class"].items()]
    headline = "test_accuracy" if "test_accuracy" in results else "conditional_accuracy"
    rows.append({"class": "all", "oracle agrees": results[headline]})
    console.print(results_table(f"{spec}: {headline.replace('_', ' ')} by the oracle", rows))
    console.print(f"grid: {grid}\nresults: {out / 'results.json'}")
