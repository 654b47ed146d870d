"""`guardgen unlearn`: remove a concept from a generative model and show the result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded, note_fresh, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX, configure

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PANEL_METHOD = "Method"
PANEL_EVAL = "Evaluation"
KINDS = {"diffusion": "diffusion models", "gan": "GANs", "classifier": "classifiers"}  # a method's ``target``


@app.command()
def methods() -> None:
    """List the unlearning methods (registry keys, also the --method names)."""
    from unlearn import UNLEARN

    rows = []
    for name in UNLEARN.names():
        cls = UNLEARN.get(name)
        rows.append({"method": name, "for": cls.target, "description": cls.summary})
    console.print(results_table("unlearning methods", rows))


@app.command()
@guarded
def concept(
    model: Annotated[str, typer.Option(help="Model spec: zoo:mnist-ddpm, zoo:mnist-t2i, a diffusers folder, hf:ORG/NAME.")],
    forget: Annotated[list[str], typer.Option(help="Concept to forget: a class id (7) or a prompt (repeatable).")],
    override: Annotated[list[str], typer.Option(help="What the forgotten concept becomes: a class id or prompt.")] = [],
    retain: Annotated[list[str], typer.Option(help="Retained prompts (text models).", show_default="the model's own prompts")] = [],
    expand: Annotated[bool, typer.Option(help="Text models: also forget the model's other known phrasings of the concept.")] = True,
    method: Annotated[str, typer.Option(help="Unlearning method (see `guardgen unlearn methods`).", rich_help_panel=PANEL_METHOD)] = "sfd",
    iterations: Annotated[Optional[int], typer.Option(min=1, help="Training iterations.", show_default="the method's", rich_help_panel=PANEL_METHOD)] = None,
    override_mode: Annotated[str, typer.Option(help="SFD override: fixed, random or oracle.", rich_help_panel=PANEL_METHOD)] = "",
    set_: Annotated[list[str], typer.Option("--set", help="Any method hyperparameter: KEY=VALUE.", rich_help_panel=PANEL_METHOD)] = [],
    out: Annotated[Path, typer.Option(help="Run folder (the unlearned pipeline, run.json, results.json, grid.png).")] = Path("runs/unlearn"),
    oracle: Annotated[str, typer.Option(help="Classifier that judges samples.", rich_help_panel=PANEL_EVAL)] = "zoo:mnist-oracle",
    eval_per_class: Annotated[int, typer.Option(min=1, help="Samples per condition for the before/after table.", rich_help_panel=PANEL_EVAL)] = 50,
    evaluate: Annotated[bool, typer.Option(help="Score before and after with the oracle.", rich_help_panel=PANEL_EVAL)] = True,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16.")] = "no",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")] = False,
) -> None:
    """Unlearn a concept (class or prompt) from a diffusion model or a GAN; print before/after figures and save a grid."""
    from rich.markup import escape

    from guardgen import __version__
    from guardgen.checkpoint import check_out, save_json
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve
    from guardgen.models.conditioning import conditioning_for
    from guardgen.models.diffusion import save_pipeline
    from guardgen.utils import model_device
    from unlearn import UNLEARN, methods_for
    from unlearn.evaluate import concept_plan, evaluate_before_after

    ref = resolve(model)
    check_out(out, {"--model": ref.path, "--oracle": resolve(oracle).path if evaluate or ref.kind == "gan" else None})
    if ref.kind == "gan":
        given = [name for name, value in (("--override", override), ("--retain", retain), ("--override-mode", override_mode))
                 if value]
        if given:
            raise GuardgenError(f"{' and '.join(given)}: a GAN forgets oracle classes outright; these options are for "
                                "diffusion models")
        return _concept_gan(model, forget=forget, method=method, iterations=iterations, sets=set_, out=out, oracle=oracle,
                            samples=max(20 * eval_per_class, 200), evaluate=evaluate, seed=seed, device=device,
                            mixed_precision=mixed_precision, resume=resume)
    if ref.kind not in ("pipeline",):
        raise GuardgenError(f"{model}: holds a {ref.kind}; unlearn concept needs a diffusion pipeline folder or a GAN folder")
    cls = UNLEARN.get(method)
    if cls.target != "diffusion":
        raise GuardgenError(f"{method} unlearns {KINDS[cls.target]}; for a diffusion model use --method "
                            f"{', '.join(methods_for('diffusion'))}")
    params = {"seed": seed, "device": device, "mixed_precision": mixed_precision, **parse_sets(set_)}
    if iterations is not None:
        params["iterations" if method != "retrain" else "steps"] = iterations
    if override_mode:
        params["override"] = override_mode
    configure(cls, {k: v for k, v in params.items() if not (method == "retrain" and k == "iterations")}, name=method)
    pipe = load_model(model, device=model_device(device))  # a bad setting was refused above, before this load
    if type(pipe).__name__ == "OneStepPipeline":
        source = (ref.run or {}).get("original_model")
        raise GuardgenError(f"{model}: a one-step generator distilled by SFD, not a diffusion model; {method} needs a "
                            "model's multi-step score network, so unlearn the original model"
                            + (f" ({source})" if isinstance(source, str) else "") + " with every concept to forget")
    cond = conditioning_for(pipe)
    judge = load_model(oracle, kind="classifier") if evaluate or override_mode == "oracle" else None
    plan = concept_plan(pipe, cond, forget=forget, override=override, retain=retain, expand=expand)
    random_override = method == "sfd" and not override_mode and not plan["override"] and "override" not in params
    if random_override:
        params["override"] = "random"
    if method == "retrain":
        params.pop("iterations", None)
        params["zoo_name"] = model[4:] if ref.source == "zoo" else ""
    if method == "sfd" and "teacher_guidance" not in params:
        meta = ref.path / "guardgen.json"
        params["teacher_guidance"] = json.loads(meta.read_text()).get("sampling", {}).get("guidance_scale", 1.0) if meta.is_file() else 1.0
    runner = configure(cls, params, name=method)
    if random_override:
        console.print("No --override: each forgotten condition is mapped to a random retained one (--override-mode random).")
    console.print(f"unlearning {plan['forget']} from [bold]{escape(model)}[/] with [bold]{method}[/] -> {out}")
    note_fresh(out, resume, "retrained/training_state" if method == "retrain" else "training_state/state.json")
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



def _concept_gan(model: str, *, forget: list[str], method: str, iterations, sets: list[str], out: Path, oracle: str,
                 samples: int, evaluate: bool, seed: int, device: str, mixed_precision: str, resume: bool) -> None:
    """`unlearn concept` on a GAN folder: Adapt-then-Unlearn (or the fine-tune baseline) with the oracle as classifier."""
    from rich.markup import escape

    from guardgen import __version__
    from guardgen.checkpoint import save_json
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model
    from guardgen.utils import model_device
    from unlearn import UNLEARN, methods_for
    from unlearn.adapt_then_unlearn import evaluate_gan_unlearning

    if method == "sfd":  # the command's default belongs to diffusion models
        method = "adapt_then_unlearn"
        console.print("GAN model: using --method adapt_then_unlearn")
    cls = UNLEARN.get(method)
    if cls.target != "gan":
        raise GuardgenError(f"{method} unlearns {KINDS[cls.target]}; for a GAN use --method {' or '.join(methods_for('gan'))}")
    try:
        classes = [int(f) for f in forget]
    except ValueError:
        raise GuardgenError(f"--forget {forget!r}: a GAN forgets oracle classes; pass class ids like 7") from None
    params = {"seed": seed, "device": device, "mixed_precision": mixed_precision, **parse_sets(sets)}
    if iterations is not None:
        params["unlearn_iterations"] = iterations
    runner = configure(cls, params, name=method)  # a bad setting is refused before the GAN loads
    generator, discriminator = load_model(model, kind="gan", device=model_device(device))
    if discriminator is None:  # both GAN methods train adversarially: say so before the progress bar
        raise GuardgenError(f"{model}: holds no discriminator (discriminator.safetensors); {method} trains the GAN "
                            "adversarially and needs it")
    judge = load_model(oracle, kind="classifier")
    console.print(f"unlearning class(es) {classes} from [bold]{escape(model)}[/] with [bold]{method}[/] -> {out}")
    note_fresh(out, resume, *(f"training_state/{stage}" for stage in runner._STAGES))
    with progress_callback(method, keys=("loss_d", "loss_g", "reg")) as callback:
        runner.fit((generator, discriminator), forget=classes, classifier=judge, callback=callback, out=out, resume=resume)
    runner.save_pretrained(out, extra={"original_model": model, "guardgen_version": __version__, "seed": seed})
    if not evaluate:
        console.print(f"saved to {out} (not evaluated)")
        return
    results = evaluate_gan_unlearning(generator, runner.generator_, judge, classes, n=samples, seed=seed,
                                      grid=out / "grid.png")
    results["train_seconds"] = runner.train_seconds_
    save_json(results, out / "results.json")
    rows = [{"metric": k, "before": results["before"][k], "after": results["after"][k]}
            for k in ("forget_share", "fd_retained", "precision", "recall")]
    rows.append({"metric": "fd_ratio (after / before)", "before": 1.0, "after": results["fd_ratio"]})
    console.print(results_table(f"{method}: forgetting {classes} ({samples} samples each)", rows))
    console.print(f"grid (left: before, right: after, same latents): {results['grid']}\nsaved to {out}")


@app.command()
@guarded
def redact(
    model: Annotated[str, typer.Option(help="Model spec: zoo:mnist-t2i, a Stable Diffusion folder, a class-conditional model.")],
    prompts: Annotated[list[str], typer.Option(help="Prompts (or class ids) to redact, or a file with one per line (repeatable).")],
    reference: Annotated[list[str], typer.Option(help="Reference (safe) prompt or class the redacted ones map to.")],
    replace: Annotated[list[str], typer.Option(help="Keyword rule KEY=VALUE: any prompt with KEY is redacted to the prompt with VALUE (repeatable).")] = [],
    retain: Annotated[list[str], typer.Option(help="Prompts to keep in place, besides the model's own prompts, generic captions and random word strings (repeatable).")] = [],
    expand: Annotated[bool, typer.Option(help="Zoo text models: also redact the model's other known phrasings of the concept.")] = True,
    variant: Annotated[str, typer.Option(help="Trainable part of the text encoder: full, last_layers or lora.", rich_help_panel=PANEL_METHOD)] = "full",
    iterations: Annotated[Optional[int], typer.Option(min=1, help="Distillation steps.", show_default="the method's", rich_help_panel=PANEL_METHOD)] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any hyperparameter: KEY=VALUE.", rich_help_panel=PANEL_METHOD)] = [],
    out: Annotated[Path, typer.Option(help="Run folder (the redacted pipeline, run.json, results.json).")] = Path("runs/redact"),
    oracle: Annotated[str, typer.Option(help="Classifier that judges samples (zoo models).", rich_help_panel=PANEL_EVAL)] = "zoo:mnist-oracle",
    per_prompt: Annotated[int, typer.Option(min=1, help="Samples per prompt for the evaluation.", rich_help_panel=PANEL_EVAL)] = 20,
    evaluate: Annotated[bool, typer.Option(help="Score the redaction with the oracle (zoo models).", rich_help_panel=PANEL_EVAL)] = True,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted distillation from --out's training_state/.")] = False,
) -> None:
    """Redact prompts from a conditional model by distilling its conditioning network (the generator stays frozen)."""
    from rich.markup import escape

    from guardgen import __version__
    from guardgen.checkpoint import check_out, save_json
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve
    from guardgen.models.conditioning import conditioning_for
    from guardgen.models.diffusion import save_pipeline
    from guardgen.utils import model_device
    from unlearn import UNLEARN
    from unlearn.evaluate import concept_plan, evaluate_redaction

    ref = resolve(model)
    if ref.kind != "pipeline":
        raise GuardgenError(f"{model}: holds a {ref.kind}; redaction needs a conditional diffusion pipeline")
    check_out(out, [("--model", ref.path), ("--oracle", resolve(oracle).path if evaluate else None),
                    *(("a --prompts file", Path(p)) for p in prompts if Path(p).is_file())])
    items = []
    for p in prompts:
        path = Path(p)
        if path.is_file():
            try:
                lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError:
                raise GuardgenError(f"--prompts {path}: not a UTF-8 text file (one prompt per line)") from None
            items += lines
            if not lines:
                raise GuardgenError(f"--prompts {path}: no prompts in it (one per line)")
        else:
            items.append(p)
    rules = {}
    for rule in replace:
        key, sep, value = rule.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise GuardgenError(f"--replace {rule!r}: expected KEY=VALUE, e.g. seven=one")
        rules[key.strip()] = value.strip()
    params = {"seed": seed, "device": device, "variant": variant, "replace": rules, **parse_sets(set_)}
    if iterations is not None:
        params["iterations"] = iterations
    runner = UNLEARN.create("redaction", **params)  # a bad setting is refused before the model loads
    pipe = load_model(model, device=model_device(device))
    cond = conditioning_for(pipe)
    plan = concept_plan(pipe, cond, forget=items, override=reference, expand=expand and cond.kind == "text", require_retain=False)
    console.print(f"redacting {len(plan['forget'])} conditional(s) of [bold]{escape(model)}[/] -> {escape(str(reference))} ({variant})")
    note_fresh(out, resume, note=cond.kind != "class")  # a class model's redaction is an exact remap, nothing to resume
    with progress_callback("redaction", keys=("loss_redact", "loss_retain")) as callback:
        runner.fit(pipe, forget=plan["forget"], retain=[cond.parse(r) for r in retain], override=plan["override"],
                   callback=callback, out=out, resume=resume)
    redacted = runner.to_pipeline(pipe)
    save_pipeline(redacted, out)
    run = {"guardgen_version": __version__, "method": "redaction", "original_model": model, "original_path": str(ref.path),
           "redacted": plan["forget"], "reference": plan["override"], "hyperparameters": runner.get_params(),
           "train_seconds": runner.train_seconds_, "seed": seed}
    save_json(run, out / "run.json")
    if not evaluate:
        console.print(f"saved to {out} (not evaluated)")
        return
    if plan.get("forget_map") is None or plan.get("override_class") is None:
        console.print(f"saved to {out} (not scored: no oracle mapping for these prompts)")
        return
    judge = load_model(oracle, kind="classifier")
    retained = list(plan["retain_map"])
    heldout = getattr(pipe.config, "heldout_prompts", {}) or {}
    retained += [ps[0] for c, ps in sorted(heldout.items()) if int(c) not in set(plan["forget_map"].values())]
    if cond.kind == "class":
        retained = [c for c in cond.all_concepts() if c not in plan["forget"]]
    results = evaluate_redaction(pipe, redacted, judge, redacted_prompts=plan["forget_map"], reference_class=plan["override_class"],
                                 paraphrases=plan["paraphrase_map"], retained_prompts=retained, per_prompt=per_prompt, seed=seed)
    results["train_seconds"] = runner.train_seconds_
    save_json(results, out / "results.json")
    rows = [{"prompts": g, "rendered as reference (before)": results.get(f"{g}_reference_rate_original", float("nan")),
             "rendered as reference (after)": results.get(f"{g}_reference_rate_redacted", float("nan")),
             "still the concept (after)": results.get(f"{g}_concept_rate_redacted", float("nan"))}
            for g in ("redacted", "paraphrase") if f"{g}_reference_rate_redacted" in results]
    console.print(results_table("redaction", rows))
    console.print(f"non-redacted prompts: same oracle label as the original on {results.get('retained_agreement', float('nan')):.1%} "
                  f"of samples\nsaved to {out}")


def _forget_indices(path: Path, n: int) -> list[int]:
    """Sample indices from an index file: a JSON list, or an object with "sample_indices" / "indices"; checked."""
    from guardgen.checkpoint import load_json
    from guardgen.errors import GuardgenError

    obj = load_json(path)
    if isinstance(obj, dict):
        obj = obj.get("sample_indices", obj.get("indices"))
    if not isinstance(obj, list) or not obj or not all(isinstance(i, int) and not isinstance(i, bool) for i in obj):
        raise GuardgenError(f"{path}: expected a non-empty JSON list of sample indices (or {{\"indices\": [...]}})")
    bad = [i for i in obj if not 0 <= i < n]
    if bad:
        raise GuardgenError(f"{path}: index {bad[0]} is out of range; the data has {n} samples (0..{n - 1})")
    if len(set(obj)) != len(obj):
        dup = next(i for i in obj if obj.count(i) > 1)
        raise GuardgenError(f"{path}: index {dup} appears more than once; a forget set lists each sample once")
    if len(obj) >= n:
        raise GuardgenError(f"{path}: the forget set ({len(obj)}) must leave retained data (the data has {n} samples)")
    return obj


@app.command()
@guarded
def evaluate(
    model: Annotated[str, typer.Option(help="Classifier spec: zoo:mnist-oracle or a classifier folder.")],
    method: Annotated[str, typer.Option(help="Classifier unlearning method: ft, ga_classifier, rl, l1_sparse, salun, retrain_classifier.")],
    forget_set: Annotated[Path, typer.Option(help="JSON file of training-sample indices to forget (e.g. indices.json of `guardgen attack worst-case-forget`).")],
    data: Annotated[str, typer.Option(help="The model's training data.")] = "mnist",
    resolution: Annotated[int, typer.Option(min=1, help="Image size the model takes.")] = 16,
    max_samples: Annotated[Optional[int], typer.Option(min=1, help="Use only N training samples (must match the index file's run).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Unlearning epochs.", show_default="the method's", rich_help_panel=PANEL_METHOD)] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any method hyperparameter: KEY=VALUE.", rich_help_panel=PANEL_METHOD)] = [],
    retrain: Annotated[bool, typer.Option(help="Also retrain from scratch without the forget set (the reference of the gap).", rich_help_panel=PANEL_EVAL)] = True,
    retrain_epochs: Annotated[Optional[int], typer.Option(min=1, help="Retraining epochs.", show_default="30, the zoo oracle's", rich_help_panel=PANEL_EVAL)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write results.json and the unlearned classifier (a classifier folder) here.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Unlearn a forget set from a classifier; print UA, MIA-efficacy, RA, TA and the gap to retraining.

    With --out, the unlearned classifier is saved there too: `--model OUT` loads it in any guardgen command."""
    import torch

    from guardgen.checkpoint import check_out, load_json, save_json
    from guardgen.cli.attack import check_takes, classifier_data, classifier_method
    from guardgen.metrics import gap_to_retrain, unlearning_report
    from guardgen.models import load_model, model_folder
    from guardgen.utils import model_device

    if out is not None:
        check_out(out, {"--model": model_folder(model)[1]}, replaces=False)
    params = {"seed": seed, "device": device, **parse_sets(set_)}
    if epochs is not None:
        params["epochs"] = epochs
    runner = classifier_method(method, params)
    train, test = classifier_data(data, resolution, max_samples)
    chosen = torch.tensor(_forget_indices(forget_set, len(train)))
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[chosen] = False
    forget, retain, tst = (train.images[chosen], train.labels[chosen]), (train.images[keep], train.labels[keep]), (test.images, test.labels)
    net = load_model(model, kind="classifier", device=model_device(device))
    check_takes(net, train.images, model, resolution)
    results = {"model": model, "method": method, "forget_set": str(forget_set), "forget_size": len(chosen), "seed": seed}
    with progress_callback(method) as callback:
        runner.fit(net, forget=forget, retain=retain, callback=callback)
    results[method] = {**unlearning_report(runner.model_, forget, retain, tst, seed=seed), "seconds": runner.train_seconds_}
    if retrain:
        ref = classifier_method("retrain_classifier", {"seed": seed, "device": device, **({"epochs": retrain_epochs} if retrain_epochs else {})})
        with progress_callback("retrain") as callback:
            ref.fit(net, forget=forget, retain=retain, callback=callback)
        results["retrain"] = {**unlearning_report(ref.model_, forget, retain, tst, seed=seed), "seconds": ref.train_seconds_}
        results["gap_to_retrain"] = gap_to_retrain(results[method], results["retrain"])
    names = {"ua": "UA", "mia_efficacy": "MIA-efficacy", "ra": "RA", "ta": "TA", "seconds": "time (s)"}
    rows = []
    for key, label in names.items():
        row = {"metric": label, method: results[method][key]}
        if retrain:
            row["retrain"] = results["retrain"][key]
            row["|diff|"] = abs(results[method][key] - results["retrain"][key]) if key != "seconds" else ""
        rows.append(row)
    if retrain:
        rows.append({"metric": "gap to retrain (mean |diff|)", method: "", "retrain": "", "|diff|": results["gap_to_retrain"]})
    if out is not None:
        source = load_json(model_folder(model)[1] / "config.json")
        runner.save_pretrained(out, architecture=source["architecture"], model_args=source.get("model_args") or {},
                               extra={"unlearned_from": model, "forget_set": str(forget_set)})
        save_json(results, Path(out) / "results.json")
    console.print(results_table(f"{method} on {len(chosen)} forgotten samples (fractions)", rows))
    if out is not None:
        console.print(f"unlearned classifier and results.json in {out}")
