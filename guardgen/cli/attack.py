"""`guardgen attack`: Attacks. Commands land with issue 4 and later issues."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, guarded, parse_sets, progress_callback, results_table

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

PLANNED = "issue 4 (on-manifold), issue 6 (`guardgen attack worst-case-forget`), issue 9 (`guardgen attack evade`)"


@app.command("status")
def status() -> None:
    """Say what this group holds now and what lands here next."""
    console.print(f"[bold]guardgen attack[/]: not built yet; lands with {PLANNED}.")


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


def _randperm(n: int, seed: int):
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def classifier_method(name: str, params: dict):
    """A classifier unlearning method from the registry, with ``params`` checked against its fields."""
    from guardgen.errors import GuardgenError
    from unlearn import UNLEARN
    from unlearn.classifier import ClassifierUnlearner

    names = [n for n in UNLEARN.names() if isinstance(UNLEARN.get(n), type) and issubclass(UNLEARN.get(n), ClassifierUnlearner)]
    if name not in names:
        raise GuardgenError(f"unknown classifier unlearning method {name!r}; choose one of: {', '.join(names)}")
    cls = UNLEARN.get(name)
    known = {k for k in cls.__dataclass_fields__ if not k.endswith("_")}
    unknown = set(params) - known
    if unknown:
        raise GuardgenError(f"{name}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    return cls(**params)


@app.command("worst-case-forget")
@guarded
def worst_case_forget(
    model: Annotated[str, typer.Option(help="Classifier spec: zoo:mnist-oracle or a classifier folder.")],
    size: Annotated[int, typer.Option(help="Forget-set size: samples (--mode data) or classes (--mode class).")],
    data: Annotated[str, typer.Option(help="The model's training data (its train split is searched).")] = "mnist",
    method: Annotated[str, typer.Option(help="Lower-level unlearning method: ft, ga_classifier, rl, l1_sparse, salun, ...")] = "ft",
    mode: Annotated[str, typer.Option(help="data (samples) or class (whole classes).")] = "data",
    reverse: Annotated[bool, typer.Option("--reverse", help="Find the easiest set to forget instead.")] = False,
    iterations: Annotated[int, typer.Option(help="Upper-level (selection) steps.")] = 10,
    inner_steps: Annotated[int, typer.Option(help="Lower-level sign-SGD steps per selection step.")] = 5,
    theta_lr: Annotated[float, typer.Option(help="Lower-level sign-SGD step size.")] = 1e-3,
    w_lr: Annotated[float, typer.Option(help="Upper-level step size on the selection weights.")] = 0.01,
    harden_every: Annotated[int, typer.Option(help="Harden the weights to the top set every k steps (0: at the end).")] = 0,
    resolution: Annotated[int, typer.Option(help="Image size the model takes.")] = 16,
    max_samples: Annotated[Optional[int], typer.Option(help="Search only N training samples (quick runs).")] = None,
    evaluate: Annotated[bool, typer.Option(help="Unlearn the selected set with --method and score it.")] = True,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs of the evaluation unlearning [default: the method's].")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Method hyperparameter KEY=VALUE (repeatable).")] = [],
    out: Annotated[Path, typer.Option(help="Run folder: indices.json, gallery.png, metrics.json.")] = Path("runs/worst-case-forget"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Search the forget set that is hardest (or, --reverse, easiest) to unlearn for a classifier."""
    import torch

    from attacks.worst_case_forget import WorstCaseForget
    from guardgen.checkpoint import save_json
    from guardgen.data import save_grid
    from guardgen.metrics import unlearning_report
    from guardgen.models import load_model

    train, test = classifier_data(data, resolution, max_samples)
    params = {"seed": seed, "device": device, **parse_sets(set_)}
    if epochs is not None:
        params["epochs"] = epochs
    runner = classifier_method(method, params)
    net = load_model(model, kind="classifier", device="cpu")
    search = WorstCaseForget(size=size, mode=mode, reverse=reverse, iterations=iterations, inner_steps=inner_steps,
                             theta_lr=theta_lr, w_lr=w_lr, harden_every=harden_every, seed=seed, device=device)
    search.check_size(len(train) if mode == "data" else len(torch.unique(train.labels)), "samples" if mode == "data" else "classes")
    with progress_callback("worst-case search", keys=("objective", "selected_loss")) as callback:
        search.fit(net, (train.images, train.labels), method=runner, callback=callback)
    chosen = search.sample_indices_
    record = {"indices": search.indices_.tolist(), "sample_indices": chosen.tolist(), "mode": mode, "size": size,
              "reverse": reverse, "method": method, "model": model, "data": data, "resolution": resolution,
              "num_samples": len(train), "max_samples": max_samples, "seed": seed}
    save_json(record, out / "indices.json")
    losses = search.losses_[chosen] if mode == "data" else torch.zeros(len(chosen))
    order = chosen[torch.argsort(losses, descending=reverse, stable=True)][:100]
    save_grid(train.images[order], out / "gallery.png", nrow=10)
    metrics = {"search_seconds": search.search_seconds_, "history": search.history_,
               "class_counts": torch.bincount(train.labels[chosen], minlength=int(train.labels.max()) + 1).tolist()}
    rows = [{"metric": "search time (s)", "value": search.search_seconds_},
            {"metric": "selected loss after lower level", "value": search.history_[-1]["selected_loss"]},
            {"metric": "mean loss (all samples)", "value": search.history_[-1]["mean_loss"]}]
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
    title = f"worst-case forget set ({'easiest' if reverse else 'hardest'}, {mode}-wise, m={size}, {method})"
    console.print(results_table(title, rows))
    console.print(f"indices: {out / 'indices.json'}  gallery: {out / 'gallery.png'}  metrics: {out / 'metrics.json'}")
