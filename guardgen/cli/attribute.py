"""`guardgen attribute`: open-world attribution of images to their sources (fit, discover, predict).

Sources are image folders (``--data DIR`` with one subfolder per source) or ``--source NAME=SPEC``
entries, where SPEC is ``mnist`` (real MNIST digits), a GAN (``zoo:mnist-gan``, a GAN folder: sampled)
or a folder of images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import OWNED, console, guarded, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX, configure

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

DataOpt = Annotated[Optional[Path], typer.Option(help="Folder with one subfolder of images per source.")]
SourceOpt = Annotated[list[str], typer.Option("--source", help="NAME=SPEC: mnist, a GAN (zoo:mnist-gan or folder) or an image folder (repeatable).")]
PerSourceOpt = Annotated[int, typer.Option(min=1, help="Images drawn per --source (GANs are sampled, MNIST and folders truncated).")]


def _source_specs(source: list[str]) -> list[str]:
    """The SPEC of each NAME=SPEC --source entry (what ``check_out`` compares with --out)."""
    return [item.split("=", 1)[-1].strip() for item in source]


def _load_sources(data: Path | None, sources: list[str], per_source: int, seed: int, split: str, resolution: int | None,
                  channels: int | None = None):
    """(images (N, C, H, W) in [0, 1], labels (N,), names) from a per-source folder and/or --source entries;
    ``channels`` (a trained model's): every source converted to it (gray or RGB), else sources must share one."""
    import torch

    from guardgen.data import load_image_folder, load_mnist, to_channels
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve
    from guardgen.models.gan import sample_gan

    images, labels, names = [], [], []
    if data is not None:
        folder, report = load_image_folder(data, layout="per_source", resolution=resolution)
        if report.skipped:
            console.print(f"skipped {len(report.skipped)} unreadable or stray files in {data}")
        images.append(folder.images)
        labels.append(folder.labels)
        names += list(folder.class_names)
    for k, item in enumerate(sources):
        if "=" not in item:
            raise GuardgenError(f"--source {item!r}: expected NAME=SPEC (mnist, zoo:NAME, a GAN folder or an image folder)")
        name, spec = (s.strip() for s in item.split("=", 1))
        if not name or not spec:
            raise GuardgenError(f"--source {item!r}: both NAME and SPEC are needed, e.g. gan=zoo:mnist-gan")
        if name in names:
            raise GuardgenError(f"--source {item!r}: the source name {name!r} is given twice; names tell sources apart")
        if spec == "mnist":
            x = load_mnist(split, resolution or 16).images
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:per_source]]
        elif spec.startswith(("zoo:", "hf:")) or (Path(spec).is_dir() and (Path(spec) / "config.json").is_file()):
            ref = resolve(spec)
            if ref.kind != "gan":
                raise GuardgenError(f"--source {name}={spec}: holds a {ref.kind}; sources are GANs, mnist or image folders")
            generator, _ = load_model(spec, kind="gan")
            x = sample_gan(generator, per_source, generator_rng=torch.Generator().manual_seed(seed * 1_000 + k))
        else:
            x = load_image_folder(spec, layout="flat", resolution=resolution)[0].images[:per_source]
        if resolution is not None and x.shape[-1] != resolution:
            from guardgen.data import resize

            x = resize(x, resolution)
        images.append(x)
        labels.append(torch.full((len(x),), len(names), dtype=torch.long))
        names.append(name)
    if not images:
        raise GuardgenError("no images: pass --data DIR (one subfolder per source) or --source NAME=SPEC")
    if channels is not None:
        images = [to_channels(x, channels) for x in images]
    channels = {int(x.shape[1]) for x in images}
    if len(channels) > 1:  # resizing does not help here; the colour format would tell the sources apart
        per = ", ".join(f"{n} {x.shape[1]}" for n, x in _named(images, labels, names))
        raise GuardgenError(f"sources differ in colour channels ({per}); give sources in one format (all gray or all RGB)")
    shapes = {tuple(x.shape[1:]) for x in images}
    if len(shapes) > 1:
        raise GuardgenError(f"sources have different image shapes {sorted(shapes)}; pass --resolution to resize them")
    return torch.cat(images), torch.cat(labels), names


def _named(images: list, labels: list, names: list[str]):
    """(source name, images) per loaded block: a --data folder's block holds several sources, named together."""
    for x, y in zip(images, labels):
        ids = sorted(set(y.tolist()))
        yield "/".join(names[i] for i in ids) if len(ids) > 1 else names[ids[0]], x


def _progress(title: str):
    return progress_callback(title, keys=("loss",))


@app.command()
@guarded
def fit(
    data: DataOpt = None,
    source: SourceOpt = [],
    per_source: PerSourceOpt = 1000,
    unlabeled: Annotated[Optional[Path], typer.Option(help="Also discover new sources in this folder (any layout).")] = None,
    resolution: Annotated[Optional[int], typer.Option(min=1, help="Resize all images to this size.", show_default="keep")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Any OpenWorldAttribution setting: KEY=VALUE.")] = [],
    out: Annotated[Path, typer.Option(help="Folder for the attribution model.")] = Path("runs/attribute"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed (sampling and training).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
) -> None:
    """Train closed-set attribution on the seen sources (and discover in --unlabeled if given)."""
    from detectors.attribution import OpenWorldAttribution
    from guardgen.checkpoint import check_out
    from guardgen.data import load_image_folder
    from guardgen.errors import GuardgenError

    check_out(out, data={"--data": data, "--unlabeled": unlabeled, "--source": _source_specs(source)})
    params = {"seed": seed, "device": device, **parse_sets(set_)}
    model = configure(OpenWorldAttribution, params)
    folders = 0 if data is None or not data.is_dir() else sum(1 for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if folders + len(source) == 1:  # known before any source is read or sampled
        raise GuardgenError("attribution needs at least 2 sources; add --source NAME=SPEC entries or subfolders of --data")
    images, labels, names = _load_sources(data, source, per_source, seed, "train", resolution)
    pool = None  # read before training, in the sources' colour format
    if unlabeled is not None:
        pool = load_image_folder(unlabeled, resolution=resolution, channels=images.shape[1])[0].images
    if pool is not None and pool.shape[1:] != images.shape[1:]:
        raise GuardgenError(f"--unlabeled {unlabeled}: images of size {tuple(pool.shape[2:])}, the sources' are "
                            f"{tuple(images.shape[2:])}; pass --resolution to resize them")
    console.print(f"training attribution on {len(names)} sources ({len(images)} images): {', '.join(names)}")
    with _progress("closed-set training") as cb:
        model.fit(images, labels, names, callback=cb)
    if pool is not None:
        with _progress("discovery") as cb:
            model.discover(pool, callback=cb)
    model.save_pretrained(out)
    _print_rounds(model)
    console.print(f"saved to {out}")


@app.command()
@guarded
def discover(
    model_dir: Annotated[Path, typer.Argument(help="Attribution model folder (from `guardgen attribute fit`).")],
    data: DataOpt = None,
    source: SourceOpt = [],
    per_source: PerSourceOpt = 500,
    clusters: Annotated[Optional[int], typer.Option(min=1, help="k of k-means per round.", show_default="the model's")] = None,
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Discovery rounds.", show_default="the model's")] = None,
    online: Annotated[bool, typer.Option(help="Add the images to the model's pool (partial_fit) instead of replacing it.")] = False,
    resolution: Annotated[Optional[int], typer.Option(min=1, help="Resize all images to this size.", show_default="the model's")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to save the updated model.", show_default="MODEL_DIR")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed for sampling GAN sources.")] = 0,
) -> None:
    """Discover unseen sources among unlabelled images; labels of --data/--source are used only to score the result."""
    from detectors.attribution import OpenWorldAttribution, discovery_metrics
    from guardgen.checkpoint import check_out

    target = out or model_dir  # the updated model replaces this folder as a whole
    same = target.resolve() == model_dir.resolve()
    check_out(target, [] if same else [("MODEL_DIR", model_dir)],
              data={"--data": data, "--source": _source_specs(source)})
    model = OpenWorldAttribution.from_pretrained(model_dir)
    resolution = resolution or model.image_shape_[-1]  # the sources are read at the model's own size unless told otherwise
    images, labels, names = _load_sources(data, source, per_source, seed + 1_000, "test", resolution, model.image_shape_[0])
    if clusters is not None:
        model.n_clusters = clusters
    with _progress("discovery") as cb:
        if online:
            model.partial_fit(images, rounds=rounds or 1, callback=cb)
        else:
            model.discover(images, rounds=rounds, callback=cb)
    model.save_pretrained(target)
    (target / OWNED).touch()  # guardgen's, so a later run may replace it (MODEL_DIR is no --out for `guarded` to mark)
    _print_rounds(model)
    seen = set(model.class_names_[: model.num_seen_])
    unseen = [i for i, n in enumerate(names) if n not in seen]
    metrics = discovery_metrics(labels.numpy(), model.predict(images, assign_unknown=True).numpy(), unseen=unseen)
    rows = [{"metric": k, "value": v if not isinstance(v, list) else ", ".join(names[i] for i in v)} for k, v in metrics.items()]
    console.print(results_table("discovery over the given images (true sources vs assigned ids)", rows))
    console.print(f"saved to {target}")


@app.command()
@guarded
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Attribution model folder.")],
    data: DataOpt = None,
    source: SourceOpt = [],
    images_dir: Annotated[Optional[Path], typer.Option("--images", help="A folder of images of unknown source (flat).")] = None,
    per_source: PerSourceOpt = 200,
    resolution: Annotated[Optional[int], typer.Option(min=1, help="Resize all images to this size.", show_default="the model's")] = None,
    out: Annotated[Path, typer.Option(help="Folder for predictions.json.")] = Path("runs/attribute-predict"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed for sampling GAN sources.")] = 0,
) -> None:
    """Attribute images: a seen source, a discovered cluster, or unknown; per-image results in predictions.json."""
    import torch

    from detectors.attribution import OpenWorldAttribution
    from guardgen.checkpoint import check_out, save_json
    from guardgen.data import load_image_folder
    from guardgen.errors import GuardgenError

    if images_dir is not None and (data is not None or source):
        raise GuardgenError("--images attributes a folder of unknown source; give it alone, without --data or --source")
    check_out(out, replaces=False, data={"--data": data, "--images": images_dir,
                                         "--source": _source_specs(source)})
    model = OpenWorldAttribution.from_pretrained(model_dir)
    channels, size = model.image_shape_[0], model.image_shape_[-1]
    resolution = resolution or size  # images are read at the model's own size unless told otherwise
    files = None
    if images_dir is not None:
        folder, report = load_image_folder(images_dir, layout="flat", resolution=resolution, channels=channels)
        images, labels, names, files = folder.images, None, None, report.files
    else:
        images, labels, names = _load_sources(data, source, per_source, seed + 2_000, "test", resolution, channels)
    pred = model.predict(images)
    pred_names = [model.class_names_[i] if i >= 0 else "unknown" for i in pred.tolist()]
    result = {"model": str(model_dir), "classes": model.class_names_, "predictions": pred_names}
    if files is not None:  # which file each prediction is about (unreadable files are left out)
        result["images"] = files
    rows = []
    if labels is not None:
        result["true"] = [names[i] for i in labels.tolist()]
        for i, name in enumerate(names):
            mask = labels == i
            got = [pred_names[j] for j in torch.nonzero(mask).flatten().tolist()]
            top = max(set(got), key=got.count)
            rows.append({"source": name, "images": int(mask.sum()), "most often": top,
                         "share": got.count(top) / len(got), "as itself": got.count(name) / len(got),
                         "unknown": got.count("unknown") / len(got)})
    else:
        for name in sorted(set(pred_names)):
            rows.append({"predicted": name, "images": pred_names.count(name)})
    save_json(result, out / "predictions.json")
    console.print(results_table(f"attribution by {model_dir}", rows))
    console.print(f"predictions: {out / 'predictions.json'}")


def _print_rounds(model) -> None:
    rows = [h for h in model.history_ if "loss" not in h]
    if rows:
        console.print(results_table("discovery rounds", rows))
    console.print(f"classes: {', '.join(model.class_names_)}")
