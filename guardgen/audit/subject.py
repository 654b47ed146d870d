"""What is audited: a loaded generative model behind one interface (sample, losses, lineage, files).

A :class:`Subject` wraps a multi-step diffusion pipeline, a one-step (distilled) pipeline or a GAN, and
answers what the sections ask: ``sample(conditions)``, the oracle class of a condition, the per-sample
denoising loss (membership), the discriminator score, the lineage recorded by guardgen, and the files
that hold the weights. Loading goes through :func:`guardgen.models.load_model` (safetensors only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from guardgen.checkpoint import load_json
from guardgen.errors import GuardgenError

__all__ = ["Subject", "load_subject", "load_data"]


@dataclass
class Subject:
    spec: str
    path: Path
    kind: str  # "diffusion" | "one-step" | "gan"
    model: object  # a diffusers pipeline, or a (generator, discriminator) pair
    cond: object | None  # ClassConditioning | TextConditioning | None (unconditional)
    meta: dict = field(default_factory=dict)  # guardgen.json / GAN config.json
    run: dict | None = None  # lineage written by guardgen (run.json, or a GAN run's "unlearning")
    guidance_scale: float = 1.0
    concept_classes: dict = field(default_factory=dict)  # user phrase -> oracle class (--concept "PHRASE=CLASS")

    # ------------------------------------------------------------------ shape and conditioning
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the model makes."""
        if self.kind == "gan":
            g = self.model[0]
            return (g.channels, g.resolution, g.resolution)
        pipe = self.model
        if getattr(pipe, "vae", None) is not None:
            return (3, *(2 ** (len(pipe.vae.config.block_out_channels) - 1) * _size(pipe.unet),) * 2)
        return (pipe.unet.config.in_channels, _size(pipe.unet), _size(pipe.unet))

    @property
    def cond_kind(self) -> str:
        return "none" if self.cond is None else self.cond.kind

    def parse(self, concept: str):
        """A user concept -> a condition of this model (class id or prompt); unconditional GANs take class ids."""
        if self.cond is None:
            text = str(concept).strip()
            if text.isdigit():
                return int(text)
            raise GuardgenError(f"concept {concept!r}: {self.spec} has no conditioning; an unconditional model "
                                "is audited for oracle classes only (pass a class id such as 7)")
        return self.cond.parse(concept)

    def concept_class(self, condition) -> int | None:
        """The oracle class a condition depicts (class id itself; a zoo prompt's digit; None if unknown)."""
        if isinstance(condition, int):
            return condition
        if condition in self.concept_classes:
            return self.concept_classes[condition]
        fn = getattr(self.model, "concept_class", None)
        return fn(condition) if fn is not None else None

    def quality_conditions(self, concepts=()) -> list:
        """The conditions sampled for quality and memorization: every class, every prompt table entry, or the concepts."""
        if self.cond is None:
            return [None]
        if self.cond.kind == "class":
            return list(range(self.cond.num_classes))
        table = getattr(self.model.config, "prompts", None) or {}
        if table:
            return [table[c][0] for c in sorted(table, key=int)]
        if not concepts:
            raise GuardgenError(f"{self.spec}: a text model without a prompt table; pass the prompts to sample with --concept")
        return [self.parse(c) for c in concepts]

    def paraphrases(self, condition) -> list[str]:
        """Held-out phrasings of the condition's concept (zoo text models), never seen in training."""
        cls = self.concept_class(condition)
        held = getattr(getattr(self.model, "config", None), "heldout_prompts", None) or {}
        return [p for p in held.get(str(cls), []) if p != condition] if cls is not None else []

    # ------------------------------------------------------------------ sampling
    def sample(self, conditions: list, *, steps: int, seed: int, batch_size: int = 256) -> torch.Tensor:
        """N conditions (None: unconditional) -> (N, C, H, W) images in [0, 1], reproducible from ``seed``."""
        if self.kind == "gan":
            from guardgen.models.gan import sample_gan

            labels = None if conditions[0] is None else list(conditions)
            g = self.model[0]
            if labels is not None and not getattr(g, "num_classes", 0):  # oracle classes on an unconditional GAN
                labels = None
            return sample_gan(g, len(conditions), generator_rng=torch.Generator().manual_seed(seed),
                              class_labels=labels, batch_size=batch_size)
        from guardgen.models.diffusion import sample_images

        return sample_images(self.model, conditions, num_inference_steps=steps, guidance_scale=self.guidance_scale,
                             seed=seed, batch_size=batch_size)

    # ------------------------------------------------------------------ white-box scores (membership)
    def loss_attack_available(self) -> str | None:
        """None when the denoising-loss attack applies, else why not."""
        if self.kind == "gan":
            return None if self.model[1] is not None else "the GAN folder holds no discriminator"
        if self.kind == "one-step":
            return "a one-step distilled generator has no denoising loss; see the black-box attack"
        if getattr(self.model, "vae", None) is not None:
            return "latent diffusion: the loss attack on VAE latents is not implemented"
        return None

    @torch.no_grad()
    def membership_scores(self, images: torch.Tensor, labels: torch.Tensor, *, timesteps, draws: int, seed: int,
                          batch_size: int = 256) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] + (N,) classes -> (N,) scores, higher = more likely a training member.

        Diffusion: minus the denoising loss ||eps - eps_theta(x_t, t, c)||^2 averaged over ``timesteps``
        (1000-step scale) and ``draws`` noise draws. GAN: the discriminator's logit (LOGAN, white-box).
        """
        if self.kind == "gan":
            d = self.model[1]
            dev = next(d.parameters()).device
            return torch.cat([d(images[i : i + batch_size].to(dev) * 2 - 1).float().flatten().cpu()
                              for i in range(0, len(images), batch_size)])
        from guardgen.models.conditioning import guided_eps

        pipe = self.model
        images, dev = images.cpu(), pipe.unet.device
        abar = pipe.scheduler.alphas_cumprod.float()
        scale = len(abar) / 1000
        ts = [min(int(round(t * scale)), len(abar) - 1) for t in timesteps]
        g = torch.Generator().manual_seed(seed)
        conds = self._loss_conditions(labels)
        total = torch.zeros(len(images))
        for t in ts:
            for _ in range(draws):
                noise = torch.randn(images.shape, generator=g)
                for i in range(0, len(images), batch_size):
                    x0 = images[i : i + batch_size] * 2 - 1
                    a = abar[t]
                    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise[i : i + batch_size]
                    kwargs = self.cond.embed(conds[i : i + batch_size], dev) if self.cond is not None else {}
                    tt = torch.full((len(x0),), t, dtype=torch.long, device=dev)
                    eps = guided_eps(pipe.unet, x_t.to(dev), tt, kwargs, None, 1.0).float().cpu()
                    total[i : i + batch_size] += ((eps - noise[i : i + batch_size]) ** 2).mean((1, 2, 3))
        return -total / (len(ts) * draws)

    def _loss_conditions(self, labels: torch.Tensor) -> list:
        if self.cond is None:
            return [None] * len(labels)
        if self.cond.kind == "class":
            return labels.tolist()
        table = getattr(self.model.config, "prompts", None) or {}
        return [table[str(int(c))][0] if str(int(c)) in table else "" for c in labels]

    # ------------------------------------------------------------------ files
    def weight_files(self) -> list[Path]:
        """Every file under the folder that defines the model (weights, configs), training state excluded."""
        files = [p for p in sorted(self.path.rglob("*")) if p.is_file()
                 and not any(part.startswith(".") or part == "training_state" for part in p.relative_to(self.path).parts)]
        return files

    def parameter_count(self) -> int:
        if self.kind == "gan":
            return sum(p.numel() for m in self.model if m is not None for p in m.parameters())
        return sum(p.numel() for name in ("unet", "vae", "text_encoder") if getattr(self.model, name, None) is not None
                   for p in getattr(self.model, name).parameters())

    def architecture(self) -> dict:
        if self.kind == "gan":
            return {"class": type(self.model[0]).__name__, **(self.meta.get("gan") or {})}
        unet = self.model.unet
        return {"pipeline": type(self.model).__name__, "unet": type(unet).__name__,
                "scheduler": type(self.model.scheduler).__name__, "unet_config": dict(unet.config)}


def _size(unet) -> int:
    s = unet.config.sample_size
    return int(s if isinstance(s, int) else s[0])


def load_subject(spec: str, *, device: str = "cpu", guidance_scale: float | None = None) -> Subject:
    """Resolve ``spec`` and load the generative model it holds; anything else is a one-line GuardgenError."""
    from guardgen.models import load_model, resolve
    from guardgen.models.conditioning import conditioning_for

    ref = resolve(spec)
    path = ref.path / ref.run["model_path"] if ref.run and ref.run.get("model_path") else ref.path
    if ref.kind == "classifier":
        raise GuardgenError(f"{spec}: holds a classifier, not a generative model; audit a diffusion pipeline or a GAN folder")
    if ref.kind == "diffusion-model":
        raise GuardgenError(f"{spec}: a bare diffusers model folder cannot sample; pass the pipeline folder (model_index.json)")
    model = load_model(spec, device=device)
    if ref.kind == "gan":
        config = load_json(path / "config.json")
        run = None
        if isinstance(config.get("unlearning"), dict):
            u = config["unlearning"]
            run = {"method": u.get("method"), "forget": u.get("forget"), "hyperparameters": u.get("hyperparameters"),
                   "original_model": config.get("original_model"), "guardgen_version": config.get("guardgen_version"),
                   "seed": config.get("seed")}
        return Subject(spec=spec, path=path, kind="gan", model=model, cond=None, meta=config, run=run)
    meta = load_json(path / "guardgen.json") if (path / "guardgen.json").is_file() else {}
    kind = "one-step" if type(model).__name__ == "OneStepPipeline" else "diffusion"
    try:
        cond = conditioning_for(model)
    except GuardgenError:
        cond = None
    if guidance_scale is None:
        guidance_scale = float((meta.get("sampling") or {}).get("guidance_scale", 1.0))
        if ref.run:
            guidance_scale = float((ref.run.get("hyperparameters") or {}).get("teacher_guidance", guidance_scale))
    return Subject(spec=spec, path=path, kind=kind, model=model, cond=cond, meta=meta, run=ref.run,
                   guidance_scale=guidance_scale)


def load_data(spec: str | None, shape: tuple[int, int, int], *, exclude=(), option: str = "--train-data") -> tuple[object, object, str]:
    """Training data and held-out data for a spec: ``mnist`` (the zoo's split) or an image folder.

    Returns ``(train ImageSet, holdout ImageSet or None, description)``. Images must match ``shape``
    (C, H, W): data of another resolution or channel count is refused (one line, exit 2), not resized,
    since distances to training images are only meaningful at the model's own resolution. ``option`` names
    the flag in those messages.
    """
    from guardgen.data import load_image_folder
    from guardgen.data.folders import MixedSizes

    c, h, w = shape
    if spec in ("mnist", "zoo:mnist"):
        if c != 1:
            raise GuardgenError(f"{option} mnist is grayscale but the model makes {c}-channel images")
        train, test = _mnist_split(h)
        if exclude:
            train = train.exclude(exclude)
        return train, test, f"MNIST-5k train split (4,000{' minus classes ' + str(list(exclude)) if exclude else ''}), {h}x{w}; held out: test split (1,000)"
    folder = Path(str(spec)).expanduser()
    if not folder.is_dir():
        raise GuardgenError(f"{option} {spec}: no such folder; pass 'mnist' or a folder of images")
    try:
        train, report = load_image_folder(folder, layout="flat" if not any(p.is_dir() for p in folder.iterdir()) else "auto")
    except MixedSizes as err:  # the audit does not resize: distances are only meaningful at the model's resolution
        raise GuardgenError(f"{option} {spec}: images of different sizes ({err.path} is {err.size[0]}x{err.size[1]}, "
                            f"the first {err.first[0]}x{err.first[1]}); the model makes {h}x{w}: pass images of that "
                            "size only") from None
    if len(train) == 0:
        raise GuardgenError(f"{option} {spec}: no readable images ({len(report.skipped)} skipped)")
    if train.class_names == ["real", "fake"]:  # a detector's 0_real/1_fake folder: its fakes are no training members
        raise GuardgenError(f"{option} {spec}: a real/fake folder (0_real, 1_fake); pass the model's training images "
                            "alone, e.g. its 0_real folder")
    got = tuple(train.images.shape[1:])
    if got[1:] != (h, w):
        raise GuardgenError(f"{option} {spec}: images are {got[1]}x{got[2]} but the model makes {h}x{w}; "
                            f"pass training data at the model's resolution")
    if got[0] != c:
        raise GuardgenError(f"{option} {spec}: images have {got[0]} channel(s) but the model makes {c}")
    return train, None, f"image folder {folder} ({len(train)} images)"


def _mnist_split(resolution: int):
    """MNIST-5k train and test splits from one parse of the file (the split of ``load_mnist``: 400 per class train)."""
    from guardgen.data import load_mnist
    from guardgen.data.shipped import MNIST_TRAIN_PER_CLASS

    everything = load_mnist("all", resolution)
    rank = torch.zeros_like(everything.labels)
    for c in everything.labels.unique().tolist():
        idx = torch.nonzero(everything.labels == c).flatten()
        rank[idx] = torch.arange(len(idx))
    train, test = everything.subset(rank < MNIST_TRAIN_PER_CLASS), everything.subset(rank >= MNIST_TRAIN_PER_CLASS)
    train.name, test.name = "mnist-train", "mnist-test"
    return train, test
