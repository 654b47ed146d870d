"""The zoo: tiny models trained on real data shipped in packages, weights shipped as safetensors.

``zoo:NAME`` resolves to ``$GUARDGEN_ZOO_DIR/NAME`` when the user rebuilt it there, else to the copy
shipped inside the package (``guardgen/zoo/weights/NAME``). ``build(NAME, out)`` retrains it, seeded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guardgen.errors import GuardgenError
from guardgen.registry import configure

__all__ = ["ZooEntry", "ZOO", "zoo_names", "zoo_path", "shipped_path", "user_zoo_dir", "build", "config_class", "settings"]


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str  # "classifier" | "diffusion" | "gan" | "t2i"
    description: str
    module: str  # where the Config and build function live
    config: str
    builder: str
    needs: tuple[str, ...] = ()  # zoo models the build uses (e.g. the oracle for evaluation)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("mnist-oracle", "classifier", "digit classifier (timm guardgen_digitnet); oracle and FD features",
                 "guardgen.zoo.oracle", "OracleConfig", "build_oracle"),
        ZooEntry("mnist-ddpm", "diffusion", "class-conditional DDPM (diffusers UNet2DModel), CFG, 16x16",
                 "guardgen.zoo.ddpm", "DDPMConfig", "build_ddpm", needs=("mnist-oracle",)),
        ZooEntry("mnist-ddim-b", "diffusion", "second class-conditional diffusion model: resnet up/down blocks, cosine schedule, DDIM",
                 "guardgen.zoo.ddim", "DDIMBConfig", "build_ddim_b", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan", "gan", "unconditional DCGAN on all digits (unlearning target), 16x16",
                 "guardgen.zoo.gan", "GANConfig", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan-dcgan-s1", "gan", "unconditional DCGAN, second seed (attribution source)",
                 "guardgen.zoo.gan", "GANDCGANS1Config", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan-upsample", "gan", "unconditional upsample+conv GAN (attribution source)",
                 "guardgen.zoo.gan", "GANUpsampleConfig", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan-upsample-s1", "gan", "unconditional upsample+conv GAN, second seed (attribution source)",
                 "guardgen.zoo.gan", "GANUpsampleS1Config", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan-resnet", "gan", "unconditional residual GAN, SNGAN-style (attribution source)",
                 "guardgen.zoo.gan", "GANResNetConfig", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-gan-resnet-s1", "gan", "unconditional residual GAN, second seed (attribution source)",
                 "guardgen.zoo.gan", "GANResNetS1Config", "build_gan", needs=("mnist-oracle",)),
        ZooEntry("mnist-t2i", "t2i", "text-conditional DDPM (UNet2DConditionModel) on MiniLM sentence embeddings",
                 "guardgen.zoo.t2i", "T2IConfig", "build_t2i", needs=("mnist-oracle",)),
    ]
}


def zoo_names() -> list[str]:
    return sorted(ZOO)


def _entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise GuardgenError(f"unknown zoo model {name!r}; available: {', '.join(zoo_names())}")
    return ZOO[name]


def shipped_path(name: str) -> Path:
    _entry(name)
    return Path(__file__).parent / "weights" / name


def user_zoo_dir() -> Path | None:
    value = os.environ.get("GUARDGEN_ZOO_DIR")
    return Path(value) if value else None


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "model_index.json").is_file()


def zoo_path(name: str) -> Path:
    """The folder of zoo model ``name``: the user's rebuilt copy if any, else the shipped one."""
    _entry(name)
    user = user_zoo_dir()
    if user is not None and _complete(user / name):
        return user / name
    path = shipped_path(name)
    if not _complete(path):
        raise GuardgenError(f"zoo model {name!r} has no weights here; build it with `guardgen zoo build {name}`")
    return path


def config_class(name: str):
    import importlib

    entry = _entry(name)
    return getattr(importlib.import_module(entry.module), entry.config)


def settings(name: str, overrides: dict):
    """The config of zoo model ``name`` with ``overrides``, checked: each field's type and range, the excluded
    classes (MNIST's 0..9, not all of them) and a batch the training data can fill."""
    config = configure(config_class(name), overrides, name=name)
    exclude = set(getattr(config, "exclude", ()))
    bad = sorted(c for c in exclude if not 0 <= c <= 9)
    if bad:
        raise GuardgenError(f"{name}: exclude names class {bad[0]}; MNIST's classes are 0..9")
    if len(exclude) >= 10:
        raise GuardgenError(f"{name}: exclude leaves no class of MNIST to train on")
    batch = getattr(config, "batch_size", None)
    if batch is not None:
        from guardgen.data.shipped import MNIST_TRAIN_PER_CLASS

        n = MNIST_TRAIN_PER_CLASS * (10 - len(exclude))  # the train split holds as many of each class
        if batch > n:
            raise GuardgenError(f"{name}: batch_size {batch} is more than the {n} training images"
                                + (" left by exclude" if exclude else "") + f"; use at most {n}")
    return config


def build(name: str, out: str | Path, *, resume: bool = False, callback=None, **overrides) -> dict:
    """Train zoo model ``name`` into ``out`` (seeded; ``overrides`` set config fields); returns metrics."""
    import importlib

    entry = _entry(name)
    module = importlib.import_module(entry.module)
    config = settings(name, overrides)
    kwargs = {}
    if "mnist-oracle" in entry.needs:
        from guardgen.models.classifier import load_classifier

        kwargs["oracle"] = load_classifier(zoo_path("mnist-oracle"))
    return getattr(module, entry.builder)(config, out, resume=resume, callback=callback, **kwargs)
