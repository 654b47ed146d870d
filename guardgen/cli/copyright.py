"""`guardgen copyright`: near access-freeness (NAF): shard a dataset, train shard models, CP-k sampling, bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded, note_fresh, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PANEL_DEDUP = "Deduplication"
PANEL_CPK = "CP-k"
PROXY = "k and bounds use the per-step Gaussian log-ratio along the sampling path, a proxy for image likelihoods"


@app.command()
@guarded
def shard(
    protected: Annotated[list[str], typer.Option(help="Protected work: mnist-test:INDEX or PATH@LABEL (repeatable).")],
    out: Annotated[Path, typer.Option(help="Shards folder to write (shards.json + shards.safetensors).")] = Path("runs/naf/shards"),
    data: Annotated[str, typer.Option(help="Dataset: 'mnist' (shipped train split) or an image folder (class subfolders).")] = "mnist",
    from_shard: Annotated[list[str], typer.Option(help="Take these image folders as the shards (checked, not re-split; repeatable).")] = [],
    copies: Annotated[int, typer.Option(min=0, help="Near-duplicate copies of each protected work planted in the data (0: none).")] = 0,
    noise: Annotated[float, typer.Option(min=0.0, help="Pixel-noise std of the planted copies.")] = 0.02,
    shards: Annotated[int, typer.Option(min=1, help="Number of shards.")] = 2,
    threshold: Annotated[float, typer.Option(min=0.0, help="Near-duplicate RMS pixel distance (images pooled to --size).", rich_help_panel=PANEL_DEDUP)] = 0.03,
    size: Annotated[int, typer.Option(min=1, help="Pooling size of the perceptual pixel distance.", rich_help_panel=PANEL_DEDUP)] = 8,
    resolution: Annotated[int, typer.Option(min=1, help="Image resolution.")] = 16,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
) -> None:
    """Split a dataset into disjoint shards with every protected work and its near-duplicates in one shard."""
    from guardgen.checkpoint import check_out
    from guardgen.copyright import (Shards, check_labels, load_protected, plan_given_shards, save_shards, shard_dataset,
                                    with_copies)
    from guardgen.data import ImageSet, load_image_set, load_mnist
    from guardgen.errors import GuardgenError

    check_out(out, data={"--data": data, "--from-shard": from_shard})
    if shards < 2 and not from_shard:
        raise GuardgenError(f"--shards {shards}: NAF needs at least 2 shards")
    if from_shard and (copies or data != "mnist" or shards not in (2, len(from_shard))):  # 2: the default of --shards
        raise GuardgenError("--from-shard takes the shards as given; it does not go with --copies, --data or --shards")
    works, labels, names = load_protected(protected, resolution, num_classes=None if from_shard or data != "mnist" else 10)

    def read(folder: str) -> ImageSet:
        if not Path(folder).is_dir():
            raise GuardgenError(f"{folder}: no such folder")
        s = load_image_set(folder, resolution=resolution)  # images of several sizes are read at --resolution
        s.images = s.images.mean(1, keepdim=True)
        return s

    if from_shard:
        parts = [read(f) for f in from_shard]
        for folder, part in zip(from_shard, parts):
            if part.class_names != parts[0].class_names:
                raise GuardgenError(f"--from-shard {folder}: classes {part.class_names}, but {from_shard[0]} has "
                                    f"{parts[0].class_names}; the labels would not match")
        check_labels(labels, names, len(parts[0].class_names))
        dataset, plan = plan_given_shards(parts, works, threshold=threshold, size=size, names=list(from_shard))
    else:
        dataset = load_mnist("train", resolution) if data == "mnist" else read(data)
        check_labels(labels, names, len(dataset.class_names))
        if copies > 0:
            dataset = with_copies(dataset, works, labels, copies=copies, noise=noise, seed=seed)
        plan = shard_dataset(dataset, works, n_shards=shards, threshold=threshold, size=size, seed=seed)
    result = Shards(dataset, plan, works, labels, names)
    save_shards(result, out, extra={"data": data if not from_shard else list(from_shard), "copies": copies, "noise": noise,
                                    "seed": seed})
    summary = plan.summary()
    rows = [{"shard": i, "images": n} for i, n in enumerate(summary["shard_sizes"])]
    console.print(results_table(f"{len(dataset)} images, {summary['near_duplicate_groups']} near-duplicate groups", rows))
    rows = [{"protected work": names[p["work"]], "label": int(labels[p["work"]]), "shard": p["shard"],
             "copies in data": p["copies_in_data"], "safe model": f"shard-{result.safe_shard(p['work'])}"}
            for p in summary["protected"]]
    console.print(results_table("protected works", rows))
    console.print(f"saved to {out}")


@app.command()
@guarded
def train(
    shards: Annotated[Path, typer.Option(help="Shards folder from `guardgen copyright shard`.")],
    out: Annotated[Path, typer.Option(help="Models folder: full/ and shard-i/ pipeline folders.")] = Path("runs/naf/models"),
    model: Annotated[list[str], typer.Option(help="Which models to train: full, shard-0, ...", show_default="all")] = [],
    steps: Annotated[Optional[int], typer.Option(min=1, help="Training steps per model.", show_default="the zoo's")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any mnist-ddpm setting: KEY=VALUE (block_out_channels=[16,32,32]); seed and device through their options.")] = [],
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Keep the models already finished in --out and continue the "
                                         "interrupted one from its training_state/.")] = False,
) -> None:
    """Train the full model and one model per shard with the zoo's class-conditional DDPM training loop."""
    from guardgen.checkpoint import save_json
    from guardgen.copyright import load_shards, shard_config, train_shard_models
    from guardgen.errors import GuardgenError
    from guardgen.utils import check_device

    sets = parse_sets(set_)
    for key in ("seed", "device"):
        if key in sets:
            raise GuardgenError(f"--set {key}={sets[key]}: use --{key}")
    shard_config(sets)  # a bad key or value is refused here, before anything is loaded
    if steps is not None and sets.setdefault("steps", steps) != steps:
        raise GuardgenError(f"--steps {steps} and --set steps={sets['steps']} disagree; give one of them")
    config = {"seed": seed, "device": device, **sets}
    check_device(device, shard_config(config).mixed_precision)
    data = load_shards(shards)
    shard_config(config, data.data.images.shape[-1])  # and against the data's resolution, before any training
    names = ["full"] + [f"shard-{i}" for i in range(data.plan.n_shards)]
    note_fresh(out, resume, *(f"{name}/training_state" for name in names), *(f"{name}/guardgen.json" for name in names),
               replaces=False)  # the models are written into --out, beside what it holds
    with progress_callback("training", keys=("loss",)) as callback:
        metrics = train_shard_models(data, out, which=model or None, callback=callback, resume=resume, **config)
    save_json({"shards": str(shards), "config": config, "metrics": metrics}, out / "train.json")
    rows = [{"model": k, "images": v["train_images"], "steps": v["steps"], "seconds": v["train_seconds"]} for k, v in metrics.items()]
    console.print(results_table("NAF models", rows))
    console.print(f"saved to {out}")


@app.command()
@guarded
def sample(
    model: Annotated[str, typer.Option(help="The full model p (spec or folder).")],
    safe: Annotated[list[str], typer.Option(help="A shard model q_i (repeatable, at least one).")],
    condition: Annotated[list[str], typer.Option(help="Class id or prompt to sample (repeatable).")],
    n: Annotated[int, typer.Option(min=1, help="Accepted samples per condition.")] = 16,
    k: Annotated[Optional[float], typer.Option(help="Log-ratio threshold in bits.", show_default="calibrated on --clean", rich_help_panel=PANEL_CPK)] = None,
    clean: Annotated[list[str], typer.Option(help="Clean conditions that calibrate k (repeatable).", show_default="--condition", rich_help_panel=PANEL_CPK)] = [],
    quantile: Annotated[float, typer.Option(min=0.0, max=1.0, help="k = this quantile of max_i log2 p/q_i on the clean conditions.", rich_help_panel=PANEL_CPK)] = 0.95,
    calibration_samples: Annotated[int, typer.Option(min=1, help="Samples per clean condition for calibration.", rich_help_panel=PANEL_CPK)] = 32,
    steps: Annotated[int, typer.Option(min=1, help="Stochastic DDIM steps.", rich_help_panel=PANEL_CPK)] = 25,
    guidance_scale: Annotated[float, typer.Option(min=0.0, help="Classifier-free guidance of every model (1: none).", rich_help_panel=PANEL_CPK)] = 1.0,
    max_draws: Annotated[int, typer.Option(min=1, help="Give up after this many draws per requested sample.", rich_help_panel=PANEL_CPK)] = 50,
    shards: Annotated[Optional[Path], typer.Option(help="Shards folder: report reproduction of its protected works.")] = None,
    delta: Annotated[float, typer.Option(min=0.0, help="Reproduction: RMS pixel distance to a protected work below this.")] = 0.1,
    out: Annotated[Path, typer.Option(help="Output folder (grid.png, grid_full.png, results.json).")] = Path("runs/naf/sample"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
) -> None:
    """CP-k: rejection-sample the full model, keeping samples whose log-ratio to every shard model is <= k."""
    from guardgen.checkpoint import save_json
    from guardgen.copyright import (CPk, calibrate_k, check_k, image_shape, load_shards, reproduction,
                                    sample_with_log_ratios)
    from guardgen.data import save_grid
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model
    from guardgen.models.conditioning import conditioning_for

    if k is not None:
        check_k(k)
        if clean:
            raise GuardgenError("--clean calibrates k; give --clean or --k, not both")
    elif not 0 < quantile < 1:
        raise GuardgenError(f"--quantile {quantile}: out of range; k is calibrated at a quantile in (0, 1)")
    works = load_shards(shards).protected if shards is not None else None  # a bad --shards fails before sampling
    if n < 1:
        raise GuardgenError(f"n={n}: expected at least 1 sample per condition")
    from guardgen.models import resolve

    if any(resolve(s).path.resolve() == resolve(model).path.resolve() for s in safe):
        raise GuardgenError(f"--safe {model}: the full model cannot be its own safe model; pass the shard models")
    p = load_model(model, kind="diffusion", device="cpu")
    qs = [load_model(s, kind="diffusion", device="cpu") for s in safe]
    cond = conditioning_for(p)
    for s, q in zip(safe, qs):
        if conditioning_for(q).kind != cond.kind:
            raise GuardgenError(f"--safe {s}: {conditioning_for(q).kind}-conditional, the full model is {cond.kind}-conditional")
    if works is not None and tuple(works.shape[1:]) != image_shape(p):
        raise GuardgenError(f"--shards {shards}: protected works of shape {tuple(works.shape[1:])}, but the model samples "
                            f"{image_shape(p)}; use the shards the models were trained on")
    conditions = [cond.parse(c) for c in condition]
    calibration = None
    if k is None:
        clean_conds = [cond.parse(c) for c in (clean or condition)]
        _, lr = sample_with_log_ratios(p, qs, [c for c in clean_conds for _ in range(calibration_samples)],
                                       num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed + 1)
        k = calibrate_k(lr, quantile)
        calibration = {"clean": clean_conds, "quantile": quantile, "samples": len(lr), "k": k}
    runner = CPk(k=k, num_inference_steps=steps, guidance_scale=guidance_scale, max_draws_per_sample=max_draws, seed=seed)
    with progress_callback("CP-k", keys=("acceptance",)) as callback:
        res = runner.sample(p, qs, [c for c in conditions for _ in range(n)], callback=callback)
    save_grid(res.images, out / "grid.png", nrow=n)
    save_grid(res.first_images, out / "grid_full.png", nrow=n)
    results = {"model": model, "safe": safe, "conditions": conditions, "k": res.k, "acceptance_rate": res.acceptance_rate,
               "k_effective": res.k_effective, "per_condition": res.per_condition, "calibration": calibration,
               "likelihood": res.likelihood, "note": PROXY, "seed": seed}
    rows = [{"condition": c, "draws": v["draws"], "acceptance": v["acceptance"], "k_effective": v["k_effective"]}
            for c, v in res.per_condition.items()]
    if works is not None:
        full, cpk = reproduction(res.first_images, works, delta), reproduction(res.images, works, delta)
        results["reproduction"] = {"delta": delta, "full": full["rate"], "cp_k": cpk["rate"],
                                   "full_per_work": full["per_work"], "cp_k_per_work": cpk["per_work"]}
        rows.append({"condition": f"reproduction (< {delta})", "draws": "", "acceptance": f"full {full['rate']:.3f}",
                     "k_effective": f"CP-k {cpk['rate']:.3f}"})
    save_json(results, out / "results.json")
    console.print(results_table(f"CP-k, k = {res.k:.2f} bits, acceptance {res.acceptance_rate:.3f}, "
                                f"k_eff = {res.k_effective:.2f} bits", rows))
    console.print(f"[dim]{PROXY}[/]\ngrids: {out / 'grid.png'} (CP-k), {out / 'grid_full.png'} (full model, same seeds)")


@app.command()
@guarded
def bound(
    k: Annotated[Optional[float], typer.Option(help="NAF level k in bits (>= 0).")] = None,
    q_event: Annotated[Optional[float], typer.Option(help="safe_C(E): probability of the event under the safe model.")] = None,
    tv: Annotated[Optional[float], typer.Option(help="TV(q1, q2) in [0, 1): k of CP-Δ (max-KL).")] = None,
    hellinger2: Annotated[Optional[float], typer.Option(help="Squared Hellinger H²(q1, q2) in [0, 1): k of CP-Δ (KL).")] = None,
    acceptance: Annotated[Optional[float], typer.Option(help="CP-k acceptance rate ν_k in (0, 1]: k + log2(1/ν_k).")] = None,
) -> None:
    """NAF bounds: p(E) <= 2^k q(E) (max-KL), p(E) <= (k+1)/log2(1/q(E)) (KL), k from TV / Hellinger / acceptance."""
    from guardgen.copyright import (check_k, event_bound_kl, event_bound_max_kl, k_effective, k_from_hellinger,
                                    k_from_tv)
    from guardgen.errors import GuardgenError

    rows = []
    if tv is not None:
        rows.append({"quantity": "k of CP-Δ max-KL, -log2(1 - TV)", "value": k_from_tv(tv)})
    if hellinger2 is not None:
        rows.append({"quantity": "k of CP-Δ KL, -2 log2(1 - H²)", "value": k_from_hellinger(hellinger2)})
    if k is not None:
        check_k(k)
        if acceptance is not None:
            rows.append({"quantity": "CP-k max-KL level, k + log2(1/ν_k)", "value": k_effective(k, acceptance)})
            k = k_effective(k, acceptance)
        if q_event is not None:
            rows.append({"quantity": "p(E) <= 2^k q(E)  (max-KL)", "value": event_bound_max_kl(q_event, k)})
            rows.append({"quantity": "p(E) <= (k+1)/log2(1/q(E))  (KL)", "value": event_bound_kl(q_event, k)})
    elif q_event is not None or acceptance is not None:
        raise GuardgenError("--q-event and --acceptance need --k")
    if not rows:
        raise GuardgenError("nothing to compute; pass --k with --q-event or --acceptance, or --tv, or --hellinger2")
    console.print(results_table("NAF bounds (k in bits, probabilities in [0, 1])", rows))
