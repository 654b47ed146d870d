"""Small GANs for the zoo: three generator/discriminator pairs, folder checkpoints, seeded sampling.

``GAN_ARCHITECTURES`` maps a short key to a :class:`GANArchitecture` (a generator class and a
discriminator class):

- ``"dcgan"``: transposed-conv generator and strided-conv discriminator (Radford et al., 2016);
- ``"upsample"``: nearest-upsample + conv generator (Odena et al., 2016), the DCGAN discriminator;
- ``"resnet"``: residual generator and discriminator (Miyato et al., 2018, SNGAN).

Every generator maps ``z: (B, latent_dim)`` to ``(B, C, H, W)`` in [-1, 1]; every discriminator maps
``(B, C, H, W)`` to ``(B,)`` logits. With ``num_classes > 0`` the generator concatenates a class
embedding to ``z`` and the discriminator adds a projection term (Miyato & Koyama, 2018).
Discriminators use spectral norm. Each module keeps its constructor arguments in ``.config``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from guardgen.checkpoint import atomic_dir, load_json, load_safetensors, mismatch, save_json, save_safetensors
from guardgen.errors import GuardgenError
from guardgen.registry import Registry

__all__ = [
    "GAN_ARCHITECTURES",
    "GANArchitecture",
    "DCGANGenerator",
    "DCGANDiscriminator",
    "UpsampleGenerator",
    "ResNetGenerator",
    "ResNetDiscriminator",
    "save_gan",
    "load_gan",
    "sample_gan",
]

GAN_ARCHITECTURES = Registry("GAN architecture")
RESOLUTIONS = (16, 32, 64)


@dataclass(frozen=True)
class GANArchitecture:
    """A registered pair of classes; both take keyword-only constructor arguments."""

    generator: type[nn.Module]
    discriminator: type[nn.Module]


def _widths(resolution: int, width: int) -> list[int]:
    """Channels at 4x4, 8x8, ..., resolution x resolution (capped at 4 * width)."""
    if resolution not in RESOLUTIONS:
        raise GuardgenError(f"GAN resolution {resolution} is not supported; choose one of {RESOLUTIONS}")
    n = int(math.log2(resolution // 4))
    return [width * min(2 ** (n - i), 4) for i in range(n + 1)]


# ---------------------------------------------------------------------------------------------------
# generators


class _Generator(nn.Module):
    """Shared conditioning: ``z`` (B, latent_dim) [+ class embedding (B, latent_dim)] -> network input."""

    def __init__(self, *, latent_dim: int, resolution: int, channels: int, width: int, num_classes: int):
        super().__init__()
        self.config = dict(
            latent_dim=latent_dim, resolution=resolution, channels=channels, width=width, num_classes=num_classes
        )
        self.latent_dim, self.resolution, self.channels = latent_dim, resolution, channels
        self.num_classes = num_classes
        self.widths = _widths(resolution, width)
        self.embed = nn.Embedding(num_classes, latent_dim) if num_classes > 0 else None
        self.in_dim = latent_dim * (2 if num_classes > 0 else 1)

    def _input(self, z: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        if self.embed is None:
            if class_labels is not None:
                raise GuardgenError("this generator is unconditional; do not pass class_labels")
            return z
        if class_labels is None:
            raise GuardgenError(f"this generator is class-conditional ({self.num_classes} classes); pass class_labels")
        return torch.cat([z, self.embed(class_labels.to(z.device).long())], dim=1)


class DCGANGenerator(_Generator):
    """Transposed convolutions from 1x1 to ``resolution``. z: (B, latent_dim) -> (B, C, H, W) in [-1, 1]."""

    def __init__(
        self, *, latent_dim: int = 64, resolution: int = 16, channels: int = 1, width: int = 64, num_classes: int = 0
    ):
        super().__init__(
            latent_dim=latent_dim, resolution=resolution, channels=channels, width=width, num_classes=num_classes
        )
        w = self.widths
        layers = [nn.ConvTranspose2d(self.in_dim, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.Conv2d(w[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self._input(z, class_labels)[:, :, None, None])


class UpsampleGenerator(_Generator):
    """Linear to 4x4, then (nearest x2, conv 3x3, BN, ReLU) stages. z: (B, latent_dim) -> (B, C, H, W) in [-1, 1]."""

    def __init__(
        self, *, latent_dim: int = 64, resolution: int = 16, channels: int = 1, width: int = 64, num_classes: int = 0
    ):
        super().__init__(
            latent_dim=latent_dim, resolution=resolution, channels=channels, width=width, num_classes=num_classes
        )
        w = self.widths
        self.fc = nn.Linear(self.in_dim, w[0] * 16)
        layers = [nn.BatchNorm2d(w[0]), nn.ReLU(True)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False)]
            layers += [nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.Conv2d(w[-1], channels, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self._input(z, class_labels))
        return self.net(h.view(len(h), self.widths[0], 4, 4))


class _UpBlock(nn.Module):
    """BN-ReLU-up-conv-BN-ReLU-conv plus an up-conv1x1 shortcut: (B, c_in, H, W) -> (B, c_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.main = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), up, nn.Conv2d(c_in, c_out, 3, 1, 1),
            nn.BatchNorm2d(c_out), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, 1, 1),
        )
        self.skip = nn.Sequential(up, nn.Conv2d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class ResNetGenerator(_Generator):
    """Linear to 4x4, then upsampling residual blocks. z: (B, latent_dim) -> (B, C, H, W) in [-1, 1]."""

    def __init__(
        self, *, latent_dim: int = 64, resolution: int = 16, channels: int = 1, width: int = 64, num_classes: int = 0
    ):
        super().__init__(
            latent_dim=latent_dim, resolution=resolution, channels=channels, width=width, num_classes=num_classes
        )
        w = self.widths
        self.fc = nn.Linear(self.in_dim, w[0] * 16)
        self.blocks = nn.Sequential(*[_UpBlock(c_in, c_out) for c_in, c_out in zip(w[:-1], w[1:])])
        self.out = nn.Sequential(nn.BatchNorm2d(w[-1]), nn.ReLU(), nn.Conv2d(w[-1], channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(self._input(z, class_labels))
        return self.out(self.blocks(h.view(len(h), self.widths[0], 4, 4)))


# ---------------------------------------------------------------------------------------------------
# discriminators


class _Discriminator(nn.Module):
    """Shared head: ``features`` (B, F) -> linear logit + optional projection ``<embed(y), features>``."""

    def __init__(self, *, resolution: int, channels: int, width: int, num_classes: int, feature_dim: int):
        super().__init__()
        self.config = dict(resolution=resolution, channels=channels, width=width, num_classes=num_classes)
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        self.head = spectral_norm(nn.Linear(feature_dim, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, feature_dim)) if num_classes > 0 else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) in [-1, 1] -> logits (B,); the projection term is added when labels are given."""
        h = self.features(x)
        out = self.head(h).squeeze(1)
        if class_labels is not None:
            if self.embed is None:
                raise GuardgenError("this discriminator is unconditional; do not pass class_labels")
            out = out + (self.embed(class_labels.to(x.device).long()) * h).sum(1)
        return out


class DCGANDiscriminator(_Discriminator):
    """Strided 4x4 convolutions down to 4x4, LeakyReLU, spectral norm; flattened features."""

    def __init__(self, *, resolution: int = 16, channels: int = 1, width: int = 64, num_classes: int = 0):
        w = _widths(resolution, width)[::-1]
        super().__init__(
            resolution=resolution, channels=channels, width=width, num_classes=num_classes, feature_dim=w[-1] * 16
        )
        layers = [spectral_norm(nn.Conv2d(channels, w[0], 3, 1, 1)), nn.LeakyReLU(0.2)]
        for c_in, c_out in zip(w[:-1], w[1:]):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _DownBlock(nn.Module):
    """(ReLU)-conv-ReLU-conv-avgpool plus a conv1x1-avgpool shortcut: (B, c_in, H, W) -> (B, c_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, *, first: bool):
        super().__init__()
        pre = [] if first else [nn.ReLU()]
        self.main = nn.Sequential(
            *pre, spectral_norm(nn.Conv2d(c_in, c_out, 3, 1, 1)), nn.ReLU(),
            spectral_norm(nn.Conv2d(c_out, c_out, 3, 1, 1)), nn.AvgPool2d(2),
        )
        self.skip = nn.Sequential(spectral_norm(nn.Conv2d(c_in, c_out, 1)), nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class ResNetDiscriminator(_Discriminator):
    """Downsampling residual blocks to 4x4, ReLU, global sum pooling; features (B, channels at 4x4)."""

    def __init__(self, *, resolution: int = 16, channels: int = 1, width: int = 64, num_classes: int = 0):
        w = _widths(resolution, width)[::-1]
        super().__init__(
            resolution=resolution, channels=channels, width=width, num_classes=num_classes, feature_dim=w[-1]
        )
        c = [channels] + w
        self.blocks = nn.Sequential(*[_DownBlock(c[i], c[i + 1], first=i == 0) for i in range(len(w) - 1)])
        self.last = spectral_norm(nn.Conv2d(w[-2], w[-1], 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.last(self.blocks(x))).sum(dim=(2, 3))


GAN_ARCHITECTURES.register("dcgan")(GANArchitecture(generator=DCGANGenerator, discriminator=DCGANDiscriminator))
GAN_ARCHITECTURES.register("upsample")(GANArchitecture(generator=UpsampleGenerator, discriminator=DCGANDiscriminator))
GAN_ARCHITECTURES.register("resnet")(GANArchitecture(generator=ResNetGenerator, discriminator=ResNetDiscriminator))


# ---------------------------------------------------------------------------------------------------
# checkpoints and sampling


def save_gan(
    folder: str | Path,
    generator: nn.Module,
    discriminator: nn.Module | None = None,
    *,
    architecture: str,
    generator_args: dict,
    discriminator_args: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``config.json`` ({"gan": {...}, **extra}), ``generator.safetensors`` [+ ``discriminator.safetensors``].

    The folder is replaced as a whole, atomically. ``discriminator_args`` defaults to ``discriminator.config``.
    """
    GAN_ARCHITECTURES.get(architecture)  # unknown names fail before anything is written
    if extra and "gan" in extra:
        raise GuardgenError("extra must not hold a 'gan' key; it is reserved for the architecture")
    if discriminator is not None and discriminator_args is None:
        discriminator_args = getattr(discriminator, "config", None)
        if discriminator_args is None:
            raise GuardgenError("pass discriminator_args to save a discriminator")
    gan = {
        "architecture": architecture,
        "generator_args": dict(generator_args),
        "discriminator_args": dict(discriminator_args) if discriminator is not None else None,
    }
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        meta = {"architecture": architecture}
        save_safetensors(generator.state_dict(), tmp / "generator.safetensors", metadata=meta)
        if discriminator is not None:
            save_safetensors(discriminator.state_dict(), tmp / "discriminator.safetensors", metadata=meta)
        save_json({"gan": gan, **(extra or {})}, tmp / "config.json")
    return folder


def _build(folder: Path, architecture: str, role: str, cls: type[nn.Module], args: dict, device) -> nn.Module:
    try:
        model = cls(**args)
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise GuardgenError(f"{folder}/config.json: bad {role}_args for {architecture!r} ({err})") from None
    path = folder / f"{role}.safetensors"
    try:
        model.load_state_dict(load_safetensors(path, weights=True))
    except RuntimeError as err:
        raise GuardgenError(
            f"{path}: {role} weights do not fit the {architecture!r} {role} built from config.json "
            f"({mismatch(err)}); check architecture and {role}_args"
        ) from None
    return model.to(device).eval()


def load_gan(
    folder: str | Path, *, device: str | torch.device = "cpu", with_discriminator: bool = True
) -> tuple[nn.Module, nn.Module | None]:
    """Read a folder written by :func:`save_gan`: ``(generator, discriminator or None)``, in eval mode.

    The discriminator is None when ``with_discriminator=False`` or when the folder holds none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise GuardgenError(f"{folder}: no such GAN folder")
    config = load_json(folder / "config.json")
    gan = config.get("gan") if isinstance(config, dict) else None
    if not isinstance(gan, dict):
        what = "has no 'gan' key" if gan is None else f"has a 'gan' entry that is a {type(gan).__name__}, not an object"
        raise GuardgenError(f"{folder}/config.json {what}; not a GAN folder")
    name = gan.get("architecture")
    if not isinstance(name, str):
        raise GuardgenError(f"{folder}/config.json: 'gan' names no architecture (e.g. \"architecture\": \"dcgan\")")
    arch = GAN_ARCHITECTURES.get(name)
    generator = _build(folder, name, "generator", arch.generator, gan.get("generator_args") or {}, device)
    discriminator = None
    d_args = gan.get("discriminator_args")
    if with_discriminator and d_args is not None and (folder / "discriminator.safetensors").is_file():
        discriminator = _build(folder, name, "discriminator", arch.discriminator, d_args, device)
    return generator, discriminator


def _labels(class_labels, n: int, num_classes: int, generator_rng: torch.Generator | None) -> torch.Tensor | None:
    if num_classes <= 0:
        if class_labels is not None:
            raise GuardgenError("this generator is unconditional; do not pass class_labels")
        return None
    if class_labels is None:
        device = generator_rng.device if generator_rng is not None else "cpu"
        return torch.randint(num_classes, (n,), generator=generator_rng, device=device).cpu()
    if isinstance(class_labels, int):
        class_labels = [class_labels] * n
    labels = torch.as_tensor(class_labels, dtype=torch.long).flatten().cpu()
    if len(labels) != n:
        raise GuardgenError(f"class_labels has {len(labels)} entries for n={n} samples")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise GuardgenError(f"class_labels must lie in [0, {num_classes - 1}]")
    return labels


@torch.no_grad()
def sample_gan(
    generator: nn.Module,
    n: int,
    *,
    generator_rng: torch.Generator | None = None,
    class_labels: torch.Tensor | list[int] | int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Draw ``n`` images: (n, C, H, W) in [0, 1], on CPU, float32.

    ``z`` is drawn from ``generator_rng`` (on its own device) so a seeded generator reproduces the
    same images. For a class-conditional generator ``class_labels`` is an int (one class for all),
    ``n`` labels, or None (uniform random labels from ``generator_rng``). The module's train/eval
    mode is left as it is.
    """
    device = next(generator.parameters()).device
    rng_device = generator_rng.device if generator_rng is not None else "cpu"
    z = torch.randn(n, generator.latent_dim, generator=generator_rng, device=rng_device)
    labels = _labels(class_labels, n, getattr(generator, "num_classes", 0), generator_rng)
    out = []
    for i in range(0, n, batch_size):
        y = labels[i : i + batch_size].to(device) if labels is not None else None
        zb = z[i : i + batch_size].to(device)
        x = generator(zb) if y is None else generator(zb, y)
        out.append(((x.float() + 1) / 2).clamp(0, 1).cpu())
    if not out:
        return torch.empty(0, generator.channels, generator.resolution, generator.resolution)
    return torch.cat(out)
