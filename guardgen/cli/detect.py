"""`guardgen detect`: AIGC image detectors: train (standard or OMAT), eval (per generator), score, attack.

Image sources are specs: ``mnist`` / ``mnist:train`` / ``mnist:test`` (real digits at ``--resolution``), a
generator (``zoo:mnist-ddpm``, ``zoo:mnist-gan``, a diffusers or GAN folder: ``--n`` images are sampled), or an
image folder (``0_real/1_fake``, ``real/fake``, one subfolder per generator, or flat; unreadable files are
skipped and counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from guardgen.cli._common import console, err_console, guarded, note_fresh, parse_sets, progress_callback, results_table
from guardgen.registry import SEED_MAX

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True)

P_DATA, P_MODEL, P_OMAT, P_OUT = "Data", "Detector", "OMAT", "Output"


# --------------------------------------------------------------------------- image sources


def _generator(spec: str, device: str = "cpu"):
    """(kind, model) for a generator spec, or None when ``spec`` is not a model (e.g. an image folder)."""
    from guardgen.errors import GuardgenError
    from guardgen.models import load_model, resolve

    try:
        ref = resolve(spec)
    except GuardgenError:
        if Path(spec).is_dir() or spec.startswith("mnist"):
            return None
        raise
    if ref.kind == "classifier":
        raise GuardgenError(f"{spec}: a classifier, not a generator or an image folder")
    return ref.kind, load_model(spec, device=device)


def _sample(kind: str, model, n: int, *, steps: int, seed: int):
    import torch

    if kind == "gan":
        from guardgen.models.gan import sample_gan

        gen = model[0] if isinstance(model, tuple) else model
        return sample_gan(gen, n, generator_rng=torch.Generator().manual_seed(seed))
    from detectors.omat import generator_conditions
    from guardgen.models.diffusion import sample_images

    conds = generator_conditions(model, n, seed=seed)
    return sample_images(model, conds, num_inference_steps=steps, seed=seed)


def load_source(spec: str, role: str, *, n: int, resolution: int, steps: int, seed: int, split: str = "train") -> dict:
    """``{name: images (N, C, H, W) in [0, 1]}`` for a spec; ``role`` is "real" or "fake" (picks a binary folder's half)."""
    from guardgen.data import load_image_folder, load_mnist
    from guardgen.data.folders import IMAGE_SUFFIXES
    from guardgen.errors import GuardgenError

    if spec.startswith("mnist") and not Path(spec).exists():
        part = spec.split(":", 1)[1] if ":" in spec else split
        return {f"mnist-{part}": load_mnist(part, resolution).images}
    if Path(spec).is_file():
        kinds = "mnist, mnist:train or an image folder" if role == "real" else "a generator spec or an image folder"
        raise GuardgenError(f"{spec}: a file; the {role} images are {kinds}")
    gen = _generator(spec)
    if gen is not None:
        if role == "real":
            raise GuardgenError(f"{spec}: a generator cannot be the real class; pass mnist or a folder of real images")
        return {spec.removeprefix("zoo:"): _sample(*gen, n, steps=steps, seed=seed)}
    data, report = load_image_folder(spec, resolution=resolution)
    bad = [(p, why) for p, why in report.skipped if not why.startswith(("not an image file", "not in a", "not under"))]
    if bad:
        err_console.print(f"[yellow]note[/]: {spec}: {len(bad)} unreadable image(s) skipped (first: {bad[0][0]}: {bad[0][1]}); "
                          f"{len(report.skipped) - len(bad)} other file(s) ignored")
    stray = [p for p, why in report.skipped if why.startswith(("not in a", "not under"))
             and Path(p).suffix.lower() in IMAGE_SUFFIXES]
    if stray:  # images the layout has no place for: say so, they are not read
        where = "directly in the folder (beside its subfolders)" if data.class_names != ["real", "fake"] else \
            "outside its real/fake folders"
        err_console.print(f"[yellow]note[/]: {spec}: {len(stray)} image(s) {where} are not read (first: {stray[0]}); "
                          "move them into a subfolder")
    names = data.class_names
    if role == "real" and names != ["real", "fake"] and len(names) > 1:
        real_dirs = [n for n in names if n.lower() in ("real", "0_real")]
        if real_dirs:  # almost a real/fake layout: the other folders would be read as real images
            others = [n for n in names if n not in real_dirs]
            fake_dirs = [n for n in others if n.lower() in ("fake", "1_fake")]
            extra = [n for n in others if n not in fake_dirs]
            if fake_dirs:
                raise GuardgenError(f"{spec}: folder(s) {', '.join(extra)} beside {real_dirs[0]} and {fake_dirs[0]}; a "
                                    "real/fake layout holds only those two: move the others out, or pass "
                                    f"{Path(spec) / real_dirs[0]} itself")
            raise GuardgenError(f"{spec}: a {real_dirs[0]} folder beside {', '.join(others)} and no 1_fake folder; for a "
                                "real/fake layout name the fake folder 1_fake (or fake), or pass the real folder itself")
    if names == ["real", "fake"]:  # a binary layout: take this role's half
        images = data.images[data.labels == (0 if role == "real" else 1)]
        if not len(images):
            raise GuardgenError(f"{spec}: no {role} images (empty {'0_real' if role == 'real' else '1_fake'} folder)")
        return {Path(spec).name if role == "real" else f"{Path(spec).name}/fake": images}
    if role == "real" or len(names) <= 1:
        return {Path(spec).name: data.images}
    out = {}
    for i, name in enumerate(names):  # one folder per generator
        if name.lower() in ("real", "0_real"):
            continue
        imgs = data.images[data.labels == i]
        if len(imgs):
            out[name] = imgs
    if not out:
        raise GuardgenError(f"{spec}: no fake images in any source folder")
    return out


def _load_many(specs: list[str], role: str, **kw) -> dict:
    out = {}
    for i, spec in enumerate(specs):
        for name, images in load_source(spec, role, **{**kw, "seed": kw["seed"] + 101 * i}).items():
            out[name if name not in out else f"{name}#{i}"] = images
    return out


def _split(images, fraction: float, seed: int):
    import torch

    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    k = int(round(len(images) * fraction))
    return images[perm[k:]], images[perm[:k]]


# --------------------------------------------------------------------------- commands


@app.command()
@guarded
def train(
    real: Annotated[str, typer.Option(help="Real images: mnist, mnist:train, or a folder.", rich_help_panel=P_DATA)] = "mnist:train",
    fake: Annotated[list[str], typer.Option(help="Fake images: a generator spec (zoo:mnist-ddpm) or a folder (repeatable).", rich_help_panel=P_DATA)] = ["zoo:mnist-ddpm"],
    n: Annotated[int, typer.Option(min=1, help="Images sampled per generator spec.", rich_help_panel=P_DATA)] = 1000,
    resolution: Annotated[int, typer.Option(min=1, help="Images are loaded at this size.", rich_help_panel=P_DATA)] = 16,
    sample_steps: Annotated[int, typer.Option(min=1, help="Sampler steps for diffusion generators.", rich_help_panel=P_DATA)] = 10,
    val_fraction: Annotated[float, typer.Option(help="Share of reals and fakes held out (in-distribution accuracy, FPR threshold).", rich_help_panel=P_DATA)] = 0.2,
    backbone: Annotated[str, typer.Option(help="Any timm.create_model name: resnet50, vit_small_patch16_224, guardgen_digitnet, ...", rich_help_panel=P_MODEL)] = "resnet50",
    mode: Annotated[str, typer.Option(help="finetune or linear_probe (frozen backbone).", rich_help_panel=P_MODEL)] = "finetune",
    pretrained_file: Annotated[str, typer.Option(help="Local .safetensors backbone weights (nothing is downloaded).", rich_help_panel=P_MODEL)] = "",
    input_size: Annotated[int, typer.Option(min=0, help="Backbone input size (0: the images' size).", rich_help_panel=P_MODEL)] = 0,
    resize: Annotated[str, typer.Option(help="bilinear, bicubic, nearest or none (refuse other sizes).", rich_help_panel=P_MODEL)] = "bilinear",
    epochs: Annotated[int, typer.Option(min=0, help="Training epochs.", rich_help_panel=P_MODEL)] = 8,
    batch_size: Annotated[int, typer.Option(min=1, rich_help_panel=P_MODEL)] = 64,
    lr: Annotated[float, typer.Option(rich_help_panel=P_MODEL)] = 2e-3,
    lr_schedule: Annotated[str, typer.Option(help="cosine (decays to 0 over the run) or constant.", rich_help_panel=P_MODEL)] = "cosine",
    model_arg: Annotated[list[str], typer.Option(help="Extra timm kwargs KEY=VALUE, e.g. patch_size=4 (repeatable).", rich_help_panel=P_MODEL)] = [],
    augment: Annotated[float, typer.Option(min=0.0, max=1.0, help="Blur + JPEG augmentation probability per image (CNNDetection uses 0.1 or 0.5).", rich_help_panel=P_MODEL)] = 0.0,
    blur_max: Annotated[float, typer.Option(min=0.0, help="Largest blur sigma of the augmentation, in pixels (Wang et al.: 3 at 256 px).", rich_help_panel=P_MODEL)] = 3.0,
    omat: Annotated[bool, typer.Option("--omat", help="On-manifold adversarial training (OMAT).", rich_help_panel=P_OMAT)] = False,
    generator: Annotated[str, typer.Option(help="Diffusion generator whose z_T is attacked; a GAN: its latent space is attacked instead.", show_default="the first --fake", rich_help_panel=P_OMAT)] = "",
    latent_generator: Annotated[list[str], typer.Option(help="GAN whose latent space is attacked as well (latent evasion; repeatable).", rich_help_panel=P_OMAT)] = [],
    pool_size: Annotated[int, typer.Option(min=0, help="Offline pool of adversarial fakes.", rich_help_panel=P_OMAT)] = 128,
    refresh_every: Annotated[int, typer.Option(min=0, help="Epochs between pool refreshes (0: offline pool only).", rich_help_panel=P_OMAT)] = 2,
    refresh_size: Annotated[int, typer.Option(min=0, help="Adversarial fakes added per refresh.", rich_help_panel=P_OMAT)] = 32,
    omat_epochs: Annotated[int, typer.Option(min=0, help="Adversarial-training epochs.", rich_help_panel=P_OMAT)] = 6,
    omat_lr: Annotated[float, typer.Option(min=0.0, help="Learning rate of the adversarial epochs.", show_default="--lr / 4", rich_help_panel=P_OMAT)] = 0.0,
    attack_steps: Annotated[int, typer.Option(min=0, help="Attack steps on z_T per image.", rich_help_panel=P_OMAT)] = 10,
    attack_lr: Annotated[float, typer.Option(rich_help_panel=P_OMAT)] = 0.1,
    out: Annotated[Path, typer.Option(help="Detector folder (config.json, model.safetensors, results.json).", rich_help_panel=P_OUT)] = Path("runs/detect"),
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    mixed_precision: Annotated[str, typer.Option(help="no, bf16 or fp16.")] = "no",
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out (its training_state/): "
                                         "the same command again, with --resume.", rich_help_panel=P_OUT)] = False,
) -> None:
    """Train a real-vs-generated detector (optionally with OMAT) and save it as a folder."""
    import shutil

    import torch

    from detectors.detector import Detector
    from detectors.omat import OMAT
    from guardgen.checkpoint import check_out, check_resumable, check_training_state, save_json
    from guardgen.errors import GuardgenError
    from guardgen.utils import model_device

    if not 0 < val_fraction < 1:
        raise GuardgenError("--val-fraction must lie strictly between 0 and 1")
    check_out(out, data={"--real": real, "--fake": fake})
    if not omat and (generator or latent_generator):
        raise GuardgenError("--generator and --latent-generator choose what OMAT attacks; add --omat, or drop them")
    params = dict(backbone=backbone, mode=mode, pretrained_file=pretrained_file, input_size=input_size, resize=resize,
                  epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, model_args=parse_sets(model_arg), seed=seed, device=device,
                  mixed_precision=mixed_precision, augment=augment, blur_sigma=(0.0, blur_max))
    det = Detector(**params)
    det._validate_params()  # settings are checked before the images are sampled and loaded
    runner = None
    if omat:
        runner = OMAT(detector=params, epochs=omat_epochs, pool_size=pool_size, refresh_every=refresh_every,
                      refresh_size=refresh_size, lr=omat_lr, seed=seed,
                      attack={"steps": attack_steps, "lr": attack_lr, "num_inference_steps": sample_steps},
                      latent_attack={"steps": attack_steps, "lr": attack_lr})
        runner._validate_params()
    if omat:  # the generators OMAT attacks, checked before any training
        gen_spec = generator or fake[0]
        gen = _generator(gen_spec, model_device(device))  # the attacks run where the generator is
        gans = []
        for spec in latent_generator + ([gen_spec] if gen is not None and gen[0] == "gan" else []):
            g = _generator(spec, model_device(device))
            if g is None or g[0] != "gan":
                raise GuardgenError(f"{spec}: --latent-generator takes a GAN (zoo:mnist-gan or a GAN folder)")
            gans.append(g[1][0])
        if gen is None or gen[0] not in ("pipeline", "gan"):
            raise GuardgenError(f"{gen_spec}: OMAT attacks a diffusion model's initial noise or a GAN's latent space; pass "
                                "--generator with a diffusion pipeline (zoo:mnist-ddpm) or a GAN (zoo:mnist-gan), not an image folder")
    note_fresh(out, resume, "training_state/detector", "training_state/base", "training_state/omat")  # before sampling
    base = out / "training_state" / "base"  # an OMAT run's finished base detector, kept with its settings
    if resume and (base / "state.json").is_file():
        caller = check_training_state(base)["extra"].get("caller", {})
        saved = caller.get("settings", {}) if isinstance(caller, dict) else {}
        now = det._resume_settings()
        auto = [k for k in ("input_size", "in_chans") if not now.get(k)]  # 0: set from the training images by fit
        check_resumable({k: v for k, v in saved.items() if k not in auto}, {k: v for k, v in now.items() if k not in auto},
                        base)
    kw = {"n": n, "resolution": resolution, "steps": sample_steps, "seed": seed}
    reals = _load_many([real], "real", **kw)
    fakes = _load_many(fake, "fake", **kw)
    channels = next(iter(reals.values())).shape[1]
    for name, images in fakes.items():  # a detector would learn the colour format, not the generator
        if images.shape[1] != channels:
            raise GuardgenError(f"the real images have {channels} channel(s), the fakes of {name} "
                                f"{images.shape[1]}; give real and fake images in one colour format (all gray or all RGB)")
    real_x = torch.cat(list(reals.values()))
    fake_x = torch.cat(list(fakes.values()))
    real_tr, real_val = _split(real_x, val_fraction, seed)
    fake_tr, fake_val = _split(fake_x, val_fraction, seed + 1)
    if not len(real_tr) or not len(fake_tr) or not len(real_val) or not len(fake_val):
        raise GuardgenError(f"too few images to train and validate ({len(real_x)} real, {len(fake_x)} fake)")
    console.print(f"training a [bold]{backbone}[/] detector ({mode}) on {len(real_tr)} real / {len(fake_tr)} fake images"
                  + (" with OMAT" if omat else "") + f" -> {out}")
    state = out / "training_state"  # the interrupted run's state; the finished detector replaces the folder
    if not resume and state.exists():
        shutil.rmtree(state)
    if resume and (state / "base" / "state.json").is_file():  # the base detector of an OMAT run had finished
        det.load_state(state / "base", real_tr)
        console.print("resuming: the base detector had finished")
    else:
        with progress_callback("detector", keys=("loss",)) as cb:
            det.fit(real_tr, fake_tr, callback=cb, state_dir=state / "detector", resume=resume)
        if omat:
            det.save_state(state / "base", extra={"settings": det._resume_settings()})
    if runner is not None:
        with progress_callback("omat", keys=("loss", "success_rate")) as cb:
            runner.fit(real_tr, fake_tr, pipe=gen[1] if gen[0] == "pipeline" else None, gans=gans, base=det, callback=cb,
                       state_dir=state / "omat", resume=resume)
        final = runner.detector_
    else:
        final = det
    p_r, p_f = final.predict_proba(real_val), final.predict_proba(fake_val)
    results = {"val_acc_real": float((p_r <= final.threshold).float().mean()), "val_acc_fake": float((p_f > final.threshold).float().mean()),
               "train_images_per_second": final.train_images_per_second_, "device": getattr(final, "device_", None),
               "data": {"real": real, "fake": fake, "n_real": len(real_x), "n_fake": len(fake_x)}}
    results["val_accuracy"] = (results["val_acc_real"] * len(p_r) + results["val_acc_fake"] * len(p_f)) / (len(p_r) + len(p_f))
    if runner is not None:
        b_r, b_f = det.predict_proba(real_val), det.predict_proba(fake_val)
        results["base_val_accuracy"] = float(((b_r <= 0.5).sum() + (b_f > 0.5).sum()) / (len(b_r) + len(b_f)))
        results["omat_attack_log"] = runner.attack_log_
        runner.save_pretrained(out, extra={"data": results["data"]})
    else:
        det.save_pretrained(out, extra={"data": results["data"]})
    save_json(results, out / "results.json")
    rows = [{"metric": k, "value": v} for k, v in results.items() if isinstance(v, (int, float))]
    console.print(results_table("detector (held-out split of the training sources)", rows))
    console.print(f"saved to {out}")


@app.command("eval")
@guarded
def eval_(
    detector: Annotated[Path, typer.Option(help="Detector folder from `guardgen detect train`.")],
    fake: Annotated[list[str], typer.Option(help="Fake sources to test, one row each (generator spec or folder; repeatable).", rich_help_panel=P_DATA)],
    real: Annotated[str, typer.Option(help="Test reals: mnist:test or a folder.", rich_help_panel=P_DATA)] = "mnist:test",
    heldout_real: Annotated[str, typer.Option(help="Reals that fix the FPR threshold.", show_default="half of --real, kept out of the test", rich_help_panel=P_DATA)] = "",
    n: Annotated[int, typer.Option(min=1, help="Images sampled per generator spec.", rich_help_panel=P_DATA)] = 500,
    resolution: Annotated[int, typer.Option(min=1, rich_help_panel=P_DATA)] = 16,
    sample_steps: Annotated[int, typer.Option(min=1, rich_help_panel=P_DATA)] = 10,
    fpr: Annotated[float, typer.Option(min=0.0, max=1.0, help="FPR of the TPR@FPR threshold (chosen on held-out reals).")] = 0.01,
    robustness: Annotated[bool, typer.Option(help="Robustness grid (JPEG, resize, blur, noise) and format-shortcut control.")] = False,
    n_boot: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the 95% CIs (fewer cannot place their 2.5% tails).")] = 300,
    out: Annotated[Optional[Path], typer.Option(help="Write results.json here.", rich_help_panel=P_OUT)] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 1,
) -> None:
    """Per-generator table: accuracy on reals and fakes, AUROC, AP, TPR@FPR (threshold from held-out reals), CIs."""
    import torch

    from detectors.detector import Detector
    from detectors.evaluate import evaluate_generators, format_control, robustness_grid
    from guardgen.checkpoint import check_out, save_json
    from guardgen.data import to_channels
    from guardgen.errors import GuardgenError

    check_out(out, replaces=False, data={"--real": real, "--heldout-real": heldout_real, "--fake": fake})
    det = Detector.from_pretrained(detector)
    kw = {"n": n, "resolution": resolution, "steps": sample_steps, "seed": seed}
    real_x = torch.cat(list(_load_many([real], "real", **kw).values()))
    if heldout_real:
        held = torch.cat(list(_load_many([heldout_real], "real", **kw).values()))
        test_real = real_x
    elif len(real_x) < 2:
        raise GuardgenError(f"--real {real}: {len(real_x)} image; half the reals fix the threshold and half are tested, "
                            "so pass at least 2 (or --heldout-real)")
    else:
        test_real, held = _split(real_x, 0.5, seed)
    fakes = _load_many(fake, "fake", **kw)
    for note in det.check_input(test_real[:1]):
        err_console.print(f"[yellow]note[/]: {note}")
    res = evaluate_generators(det, test_real, fakes, real_heldout=held, fpr=fpr, n_boot=n_boot, seed=seed)
    rows = []
    for name, r in res["generators"].items():
        rows.append({"generator": name, "n": r["n_fake"], "acc_real": r["acc_real"], "acc_fake": r["acc_fake"],
                     "auroc": r["auroc"], "auroc 95% CI": f"{r['auroc_ci'][0]:.3f}-{r['auroc_ci'][1]:.3f}", "ap": r["ap"],
                     f"tpr@{fpr:g}fpr": r["tpr_at_fpr"]})
    console.print(results_table(f"{detector}: per generator ({len(test_real)} test reals; threshold for TPR@FPR "
                                f"from {len(held)} held-out reals)", rows))
    console.print(f"mean AUROC {res['mean_auroc']:.4f}; realised FPR on test reals {res['fpr_realised']:.4f}")
    results = {k: v for k, v in res.items() if k != "scores"}
    if robustness:  # fakes of several sources in one batch: in the detector's colour format (as it reads them)
        all_fake = torch.cat([to_channels(x, det.in_chans) for x in fakes.values()])
        test_real = to_channels(test_real, det.in_chans)
        results["robustness"] = robustness_grid(det, test_real, all_fake, seed=seed)
        results["format_control"] = format_control(det, test_real, all_fake)
        console.print(results_table("robustness (same perturbation on reals and fakes)", results["robustness"]))
        console.print(results_table("format-shortcut control (JPEG re-encoding)", results["format_control"]))
    if out is not None:
        save_json(results, out / "results.json")
        console.print(f"saved to {out / 'results.json'}")


@app.command()
@guarded
def score(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    detector: Annotated[Path, typer.Option(help="Detector folder.")],
    limit: Annotated[int, typer.Option(min=1, help="Rows shown in the table.")] = 50,
) -> None:
    """Score image files: probability that each is generated."""
    import torch

    from detectors.detector import Detector
    from guardgen.data.folders import IMAGE_SUFFIXES, unreadable_reason, read_image
    from guardgen.data.shipped import resize
    from guardgen.errors import GuardgenError

    det = Detector.from_pretrained(detector)
    files = []
    for p in images:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.append(p)
        else:
            raise GuardgenError(f"{p}: no such file or folder")
    tensors, names, skipped, notes, other = [], [], [], set(), []
    for f in files:
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            other.append(f)  # manifests, notes: not images
            continue
        try:
            x = read_image(f, det.in_chans)
        except Exception as err:  # noqa: BLE001 - a bad file is skipped and counted
            skipped.append((f, unreadable_reason(f, err)))
            continue
        notes.update(det.check_input(x[None]))
        tensors.append(resize(x[None], det.input_size)[0] if x.shape[-1] != det.input_size or x.shape[-2] != det.input_size else x)
        names.append(str(f))
    if not tensors:  # why, in the one error line
        why = [f"{len(skipped)} unreadable (first: {skipped[0][0]}: {skipped[0][1]})"] if skipped else []
        why += [f"{len(other)} without an image suffix (first: {other[0]}; images are "
                f"{', '.join(IMAGE_SUFFIXES)})"] if other else []
        raise GuardgenError(f"no readable images among {len(files)} file(s): {'; '.join(why) or 'the folders are empty'}")
    if skipped:
        err_console.print(f"[yellow]note[/]: {len(skipped)} unreadable image(s) skipped (first: {skipped[0][0]}: {skipped[0][1]})")
    for note in sorted(notes):
        err_console.print(f"[yellow]note[/]: {note}")
    p = det.predict_proba(torch.stack(tensors))
    rows = [{"image": n_, "p_fake": float(v), "verdict": "generated" if v > det.threshold else "real"} for n_, v in zip(names, p)]
    console.print(results_table(f"{len(rows)} image(s), {int((p > det.threshold).sum())} called generated", rows[:limit]))


@app.command()
@guarded
def attack(
    detector: Annotated[Path, typer.Option(help="Detector folder.")],
    generator: Annotated[str, typer.Option(help="Diffusion generator whose initial noise z_T is optimised.")] = "zoo:mnist-ddpm",
    n: Annotated[int, typer.Option(min=1, help="Images to attack (one fresh z_T each).")] = 16,
    steps: Annotated[int, typer.Option(min=0, help="Attack steps (Adam on z_T).")] = 20,
    lr: Annotated[float, typer.Option()] = 0.1,
    sample_steps: Annotated[int, typer.Option(min=1, help="DDIM steps of the differentiable sampler.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, )] = 16,
    out: Annotated[Optional[Path], typer.Option(help="Save the adversarial images, a grid and results.json here.")] = None,
    seed: Annotated[int, typer.Option(min=0, max=SEED_MAX, help="Random seed.")] = 0,
) -> None:
    """On-manifold attack: optimise a diffusion model's z_T until the detector calls its image real."""
    from attacks.on_manifold import OnManifoldAttack
    from detectors.detector import Detector
    from detectors.omat import generator_conditions
    from guardgen.checkpoint import save_json
    from guardgen.errors import GuardgenError

    det = Detector.from_pretrained(detector)
    gen = _generator(generator)
    if gen is None:
        raise GuardgenError(f"{generator}: not a model; the on-manifold attack needs a diffusion pipeline such as zoo:mnist-ddpm")
    pipe = gen[1]
    conds = generator_conditions(pipe, n, seed=seed) if gen[0] == "pipeline" else list(range(n))
    runner = OnManifoldAttack(steps=steps, lr=lr, num_inference_steps=sample_steps, batch_size=batch_size, seed=seed,
                              threshold=det.threshold)
    with progress_callback("on-manifold attack", keys=("loss", "success_rate")) as cb:
        res = runner.attack(pipe, det.as_module(), conds, callback=cb)
    summary = res.summary()
    console.print(results_table(f"on-manifold attack on {detector} ({generator}, {steps} steps)",
                                [{"metric": k, "value": v} for k, v in summary.items()]))
    if out is not None:
        import torch

        from guardgen.data.generated import save_grid, write_image_set

        write_image_set(res.images, out / "adversarial")
        save_grid(torch.cat([res.clean, res.images]), out / "grid.png", nrow=max(1, len(res.images)))
        save_json({**summary, "success": res.success.tolist(), "steps": res.steps.tolist(), "drift": res.drift.tolist(),
                   "score_before": res.score_before.tolist(), "score_after": res.score_after.tolist()}, out / "results.json")
        console.print(f"saved to {out} (grid: top row clean, bottom row adversarial)")
