"""`guardgen attack`: attacks that stress unlearning and detectors.

``worst-case-forget`` searches the forget set hardest to unlearn; ``evade`` searches a GAN's latent space for
images detectors call real. The on-manifold attack on diffusion models is ``guardgen detect attack``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, err_console, guarded, note_fresh, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX, configure

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

# -- worst-case forget sets (issue 6) ------------------------------------------------------------------

CLASSIFIER_DATA = ("mnist",)
_DATA_CACHE: dict = {}


def classifier_data(data: str, resolution: int = 16, max_samples: int | None = None):
    """The training and test sets of a classifier's data name (the training set is what the model was trained on)."""
    from guardgen.data import load_mnist
    from guardgen.errors import GuardgenError

    if data not in CLASSIFIER_DATA:
        raise GuardgenError(f"unknown data {data!r}; choose one of: {', '.join(CLASSIFIER_DATA)}")
    if (data, resolution) not in _DATA_CACHE:  # loading and resizing is slow on small CPUs; keep it per process
        _DATA_CACHE[(data, resolution)] = (load_mnist("train", resolution), load_mnist("test", resolution))
    train, test = _DATA_CACHE[(data, resolution)]
    if max_samples is not None:
        if max_samples < 2:
            raise GuardgenError(f"--max-samples must be at least 2, got {max_samples}")
        pick = _randperm(len(train), seed=0)[:max_samples]
        train = train.subset(pick.sort().values)
    return train, test


def check_takes(net, images, model: str, resolution: int) -> None:
    """One line when the classifier cannot take these images (a --resolution it was not built for)."""
    import torch

    from guardgen.errors import GuardgenError

    try:
        with torch.no_grad():
            net.eval()(images[:1].to(next(net.parameters()).device))
    except RuntimeError as err:
        raise GuardgenError(f"{model} cannot take {resolution}x{resolution} images ({str(err).splitlines()[0]}); "
                            "pass the --resolution it was trained at") from None


def _randperm(n: int, seed: int):
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def classifier_method(name: str, params: dict):
    """A classifier unlearning method from the registry, with ``params`` checked against its fields."""
    from guardgen.errors import GuardgenError
    from unlearn import UNLEARN, methods_for

    names = methods_for("classifier")
    if name not in names:
        raise GuardgenError(f"unknown classifier unlearning method {name!r}; choose one of: {', '.join(names)}")
    cls = UNLEARN.get(name)
    return configure(cls, params, name=name)


@app.command("worst-case-forget")
@guarded
def worst_case_forget(
    model: Annotated[str, typer.Option(help="Classifier spec: zoo:mnist-oracle or a classifier folder.")],
    size: Annotated[int, typer.Option(min=1, help="Forget-set size: samples (--mode data) or classes (--mode class).")],
    data: Annotated[str, typer.Option(help="The model's training data (its train split is searched).")] = "mnist",
    method: Annotated[str, typer.Option(help="Lower-level unlearning method: ft, ga_classifier, rl, l1_sparse, salun, ...")] = "ft",
    mode: Annotated[str, typer.Option(help="data (samples) or class (whole classes).")] = "data",
    reverse: Annotated[bool, typer.Option("--reverse", help="Find the easiest set to forget instead.")] = False,
    iterations: Annotated[int, typer.Option(min=1, help="Upper-level (selection) steps.")] = 10,
    inner_steps: Annotated[Optional[int], typer.Option(min=0, help="Lower-level sign-SGD steps per selection step.", show_default="one pass over the data")] = None,
    theta_lr: Annotated[float, typer.Option(help="Lower-level sign-SGD step size.")] = 1e-4,
    w_lr: Annotated[float, typer.Option(help="Upper-level step size on the selection weights.")] = 0.01,
    harden_every: Annotated[int, typer.Option(min=0, help="Harden the weights to the top set every k steps (0: at the end).")] = 0,
    signal: Annotated[str, typer.Option(help="Upper-level signal: loss (the paper's: what the unlearned model still fits) or "
                                        "gap (what departs most from a from-scratch reference that never saw the sample).")] = "loss",
    reference_set: Annotated[list[str], typer.Option("--reference-set", help="--signal gap: the reference models' training recipe, "
                                                     "retrain_classifier KEY=VALUE (repeatable; e.g. epochs=20, augment=false); "
                                                     "default: the zoo oracle's.")] = [],
    reference_folds: Annotated[int, typer.Option(min=2, help="--signal gap: reference models, each holding out one fold.")] = 2,
    resolution: Annotated[int, typer.Option(min=1, help="Image size the model takes.")] = 16,
    max_samples: Annotated[Optional[int], typer.Option(min=1, help="Search only N training samples (quick runs).")] = None,
    evaluate: Annotated[bool, typer.Option(help="Unlearn the selected set with --method and score it.")] = True,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Epochs of the evaluation unlearning.", show_default="the method's")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Method hyperparameter KEY=VALUE (repeatable).")] = [],
    out: Annotated[Path, typer.Option(help="Run folder: indices.json, gallery.png, metrics.json.")] = Path("runs/worst-case-forget"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted search from --out's training_state/ "
                                         "(reference losses, upper steps and a finished search kept; the evaluation runs whole).")] = False,
) -> None:
    """Search the forget set that is hardest (or, --reverse, easiest) to unlearn for a classifier."""
    import shutil

    import torch

    from attacks.worst_case_forget import WorstCaseForget
    from guardgen.checkpoint import check_out, save_json
    from guardgen.data import save_grid
    from guardgen.errors import GuardgenError
    from guardgen.metrics import unlearning_report
    from guardgen.models import load_model, model_folder

    check_out(out, {"--model": model_folder(model)[1]}, replaces=False)
    if mode not in ("data", "class"):
        raise GuardgenError(f"unknown --mode {mode!r}; choose data or class")
    if signal not in ("loss", "gap"):
        raise GuardgenError(f"unknown --signal {signal!r}; choose loss or gap")
    train, test = classifier_data(data, resolution, max_samples)
    params = {"seed": seed, "device": device, **parse_sets(set_)}
    if epochs is not None:
        params["epochs"] = epochs
    runner = classifier_method(method, params)
    net = load_model(model, kind="classifier", device="cpu")
    check_takes(net, train.images, model, resolution)
    reference = None
    if signal == "gap":
        reference = classifier_method("retrain_classifier", {"seed": seed + 100, "device": device, **parse_sets(reference_set)})
    search = WorstCaseForget(size=size, mode=mode, reverse=reverse, iterations=iterations, inner_steps=inner_steps,
                             theta_lr=theta_lr, w_lr=w_lr, harden_every=harden_every, upper_signal=signal,
                             reference_folds=reference_folds, seed=seed, device=device)
    search.check_size(len(train) if mode == "data" else len(torch.unique(train.labels)), "samples" if mode == "data" else "classes")
    state_dir = out / "training_state"
    if resume and (state_dir / "search" / "result.json").is_file():  # stopped in the evaluation: the search is done
        search.load_result(state_dir / "search", len(train), model=net, method=runner, reference=reference)
        console.print(f"search kept from {state_dir / 'search'}")
    else:
        note_fresh(out, resume, "training_state/state.json", "training_state/search")
        with progress_callback("worst-case search", keys=("objective", "selected_loss")) as callback:
            search.fit(net, (train.images, train.labels), method=runner, reference=reference, callback=callback,
                       state_dir=state_dir, resume=resume)
        if evaluate:
            search.save_result(state_dir / "search")
    chosen = search.sample_indices_
    record = {"indices": search.indices_.tolist(), "sample_indices": chosen.tolist(), "mode": mode, "size": size,
              "reverse": reverse, "method": method, "signal": signal, "model": model, "data": data, "resolution": resolution,
              "num_samples": len(train), "max_samples": max_samples, "seed": seed}
    save_json(record, out / "indices.json")
    losses = search.sample_signal_[chosen] if mode == "data" else torch.zeros(len(chosen))
    order = chosen[torch.argsort(losses, descending=reverse, stable=True)][:100]
    save_grid(train.images[order], out / "gallery.png", nrow=10)
    metrics = {"search_seconds": search.search_seconds_, "history": search.history_, "signal": signal,
               "class_counts": torch.bincount(train.labels[chosen], minlength=int(train.labels.max()) + 1).tolist()}
    what = "loss" if signal == "loss" else "-|loss - reference|"
    rows = [{"metric": "search time (s)", "value": search.search_seconds_},
            {"metric": f"selected {what} after lower level", "value": search.history_[-1]["selected_loss"]},
            {"metric": f"mean {what} (all samples)", "value": search.history_[-1]["mean_loss"]}]
    if evaluate:
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[chosen] = False
        forget, retain = (train.images[chosen], train.labels[chosen]), (train.images[keep], train.labels[keep])
        with progress_callback(method) as callback:
            runner.fit(net, forget=forget, retain=retain, callback=callback)
        report = unlearning_report(runner.model_, forget, retain, (test.images, test.labels), seed=seed)
        metrics["evaluation"] = {**report, "train_seconds": runner.train_seconds_}
        rows += [{"metric": f"{k} after {method}", "value": v} for k, v in report.items()]
    save_json(metrics, out / "metrics.json")
    if state_dir.exists():
        shutil.rmtree(state_dir)
    title = f"worst-case forget set ({'easiest' if reverse else 'hardest'}, {mode}-wise, m={size}, {method}, signal {signal})"
    console.print(results_table(title, rows))
    console.print(f"indices: {out / 'indices.json'}  gallery: {out / 'gallery.png'}  metrics: {out / 'metrics.json'}")


# -- latent evasion of forensic detectors (issue 9) ---------------------------------------------------

P_MODELS, P_GUIDE, P_BUDGET, P_OUT = "Models", "Attribute guidance", "Budget", "Output"


def _evade_generator(spec: str):
    from attacks.latent_spaces import latent_space
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve

    kind = resolve(spec).kind
    if kind in ("pipeline", "diffusion-model"):
        raise GuardgenError(f"{spec}: a diffusion model has no differentiable GAN latent path here; attack its initial "
                            "noise with `guardgen detect attack` (on-manifold), or pass a GAN")
    if kind != "gan":
        raise GuardgenError(f"{spec}: holds a {kind}, not a generator; no differentiable latent path to search "
                            "(pass a GAN: zoo:mnist-gan or a GAN folder)")
    return latent_space(load_model(spec))


def _evade_classifier(spec: str):
    """(classifier, class names, input size) for an attribute classifier spec."""
    from guardgen.checkpoint import load_json
    from guardgen.models import load_model, resolve

    net = load_model(spec, kind="classifier")
    config = load_json(resolve(spec).path / "config.json")
    k = int(getattr(net, "num_classes", 0) or config.get("num_classes") or 0)
    names = list(config.get("class_names") or [str(i) for i in range(k)])
    size = (config.get("input") or {}).get("resolution")
    return net, names, size


@app.command("evade")
@guarded
def evade(
    generator: Annotated[str, typer.Option(help="GAN spec (zoo:mnist-gan or a GAN folder); its latent space is searched.", rich_help_panel=P_MODELS)],
    detector: Annotated[list[str], typer.Option(help="White-box detector folder (repeatable; the first is the single-mode target).", rich_help_panel=P_MODELS)],
    black_box: Annotated[list[str], typer.Option(help="Held-out detector folder: scored, never attacked (repeatable).", rich_help_panel=P_MODELS)] = [],
    mode: Annotated[str, typer.Option(help="single (first detector), ensemble (mean loss) or meta (MAML-style virtual steps).", rich_help_panel=P_MODELS)] = "ensemble",
    attribute: Annotated[Optional[str], typer.Option(help="Attribute to keep, a class of --classifier: \"digit 4\", \"4\" (unset: each image keeps its own class).", rich_help_panel=P_GUIDE)] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference image: images stay close to it in the classifier's feature space.", rich_help_panel=P_GUIDE)] = None,
    classifier: Annotated[str, typer.Option(help="Attribute classifier spec.", rich_help_panel=P_GUIDE)] = "zoo:mnist-oracle",
    attribute_weight: Annotated[float, typer.Option(rich_help_panel=P_GUIDE)] = 1.0,
    reg_weight: Annotated[float, typer.Option(help="Latent regulariser: weight of ||c - c0||^2.", rich_help_panel=P_GUIDE)] = 1.0,
    layers: Annotated[str, typer.Option(help="Layer mask over W+ rows: 0-3, coarse, medium, fine (\"\": all).", rich_help_panel=P_GUIDE)] = "",
    n: Annotated[int, typer.Option(min=1, help="Images to generate and attack.", rich_help_panel=P_BUDGET)] = 32,
    steps: Annotated[int, typer.Option(min=0, help="Adam steps on the latent codes.", rich_help_panel=P_BUDGET)] = 60,
    lr: Annotated[float, typer.Option(rich_help_panel=P_BUDGET)] = 0.05,
    inner_lr: Annotated[float, typer.Option(help="Meta mode: virtual-step size.", rich_help_panel=P_BUDGET)] = 0.02,
    candidates: Annotated[int, typer.Option(min=1, help="Start from the best of k random codes for the attribute.", rich_help_panel=P_BUDGET)] = 32,
    restarts: Annotated[int, typer.Option(min=0, help="Fresh starts (each a full --steps run) for images that end a run unsuccessful.", rich_help_panel=P_BUDGET)] = 2,
    out: Annotated[Path, typer.Option(help="Run folder: gallery.png (before/after), adversarial/, results.json.", rich_help_panel=P_OUT)] = Path("runs/evade"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
) -> None:
    """Latent evasion: search a GAN's latent space for images the detectors call real, keeping an attribute."""
    import torch

    from attacks.latent_evasion import LatentEvasion, detector_scores, detector_views, parse_attribute
    from detectors.detector import Detector
    from guardgen.checkpoint import check_out, save_json
    from guardgen.data import save_grid
    from guardgen.data.folders import unreadable_reason, read_image
    from guardgen.data.generated import write_image_set
    from guardgen.errors import GuardgenError
    from guardgen.models import resolve

    check_out(out, [("--generator", resolve(generator).path), ("--classifier", resolve(classifier).path),
                    *(("--detector", p) for p in [*detector, *black_box] if Path(p).exists())], replaces=False)
    if attribute is not None and reference is not None:
        raise GuardgenError("pass --attribute or --reference, not both")
    seen: dict = {}
    for p in detector:
        key = Path(p).resolve()
        if key in seen:
            raise GuardgenError(f"--detector {p}: given twice (as {seen[key]}); each white-box detector is attacked once")
        seen[key] = p
    if mode == "meta" and len(detector) < 2:
        raise GuardgenError("--mode meta needs at least 2 --detector (meta-train and meta-test); pass another, or use "
                            "--mode single")
    runner = LatentEvasion(mode=mode, steps=steps, lr=lr, inner_lr=inner_lr, candidates=candidates, restarts=restarts,
                           layers=layers, attribute_weight=attribute_weight, reg_weight=reg_weight, seed=seed)
    runner._validate_params()
    space = _evade_generator(generator)
    clf, names, size = _evade_classifier(classifier)
    target = parse_attribute(attribute, names) if attribute is not None else None
    ref = None
    if reference is not None:
        if not reference.is_file():
            raise GuardgenError(f"{reference}: no such image file")
        try:
            ref = read_image(reference)
        except Exception as err:  # noqa: BLE001 - one line, whatever Pillow says
            raise GuardgenError(f"{reference}: {unreadable_reason(reference, err)}") from None
    white = [Detector.from_pretrained(p) for p in detector]
    black = [Detector.from_pretrained(p) for p in black_box]
    with progress_callback(f"latent evasion ({mode})", keys=("loss", "success_rate", "run")) as cb:
        res = runner.attack(space, white, n, classifier=clf, target=target, reference=ref, classifier_size=size,
                            names=[str(p) for p in detector], callback=cb)
    shape = tuple(res.images.shape[1:])
    bviews, bnotes = detector_views(black, shape, [str(p) for p in black_box])
    wviews, _ = detector_views(white, shape, [str(p) for p in detector])
    for note in res.notes + bnotes:
        err_console.print(f"[yellow]note[/]: {note}")
    rows, per = [], {}
    for role, views in (("white-box", wviews), ("black-box", bviews)):
        if not views:
            continue
        before, after = detector_scores(views, res.clean), detector_scores(views, res.images)
        for j, v in enumerate(views):
            label = role if role == "black-box" or mode != "single" or j == 0 else "white-box, not attacked (single mode)"
            r = {"detector": v.name, "role": label, "success_before": float((before[:, j] < v.threshold).float().mean()),
                 "success": float((after[:, j] < v.threshold).float().mean()), "p_fake_before": float(before[:, j].mean()),
                 "p_fake_after": float(after[:, j].mean())}
            per[v.name if v.name not in per else f"{v.name} ({role})"] = r
            rows.append(r)
    summary = res.summary()
    fidelity = summary.get("attribute_fidelity")
    results = {"generator": generator, "latent_space": space.name, "mode": mode, "classifier": classifier,
               "attribute": attribute, "target_class": target, "reference": str(reference) if reference else None,
               "detectors": per, "attribute_fidelity": fidelity, "attribute_fidelity_before": summary.get("attribute_fidelity_before"),
               "feature_distance": summary.get("feature_distance"), "mean_drift": summary["mean_drift"],
               "seconds": summary["seconds"], "notes": res.notes + bnotes, "config": runner.config(),
               "targets": None if res.targets is None else res.targets.tolist(), "kept_step": res.kept_step.tolist(),
               "steps_used": res.steps_used.tolist()}
    k = min(n, 16)
    pairs = torch.cat([torch.cat([res.clean[i:i + k], res.images[i:i + k]]) for i in range(0, n, k)])
    save_grid(pairs, out / "gallery.png", nrow=k)
    write_image_set(res.images, out / "adversarial")
    save_json(results, out / "results.json")
    console.print(results_table(f"latent evasion of {generator} ({space.name}, {mode}, {steps} steps, n={n})", rows))
    extra = f"attribute fidelity {fidelity:.3f} (before {summary['attribute_fidelity_before']:.3f})" if fidelity is not None else ""
    if summary.get("feature_distance") is not None:
        extra += f"; feature distance to the reference {summary['feature_distance']:.3f}"
    console.print(f"{extra}; mean latent drift {summary['mean_drift']:.3f}; mean steps per image {summary['mean_steps_used']:.1f}")
    console.print(f"gallery: {out / 'gallery.png'} (rows: before, after)  results: {out / 'results.json'}")
