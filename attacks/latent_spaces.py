"""Differentiable latent paths of image generators: ``z`` (any GAN), W+ and per-layer noise (StyleGAN-like).

A latent space turns a dict of codes into images, differentiably, so an attack can optimise the codes:

- :class:`ZSpace`: ``generator(z)`` for any ``nn.Module`` with ``latent_dim`` (or ``z_dim``) mapping
  z: (B, d) to an image; the zoo GANs (``guardgen.models.gan``) have only this space. One "layer".
- :class:`StyleSpace`: a StyleGAN-like generator with a mapping network. Codes ``w`` (B, L, w_dim) are the
  W+ rows (one per synthesis layer, the layer axis of a layer mask) and, where the generator takes them,
  per-layer noise maps ``noise_i`` (B, 1, H_i, W_i). Two conventions are read: rosinality's ``stylegan2-pytorch``
  (``style``, ``n_latent``, ``make_noise``, ``g([w], input_is_latent=True, noise=...)``) and NVlabs'
  ``stylegan2-ada-pytorch`` (``mapping``, ``synthesis``, ``num_ws``; W+ only, its noise buffers stay fixed).

:func:`latent_space` picks the adapter and checks, with one probe, that the image depends differentiably
on the codes; a generator without such a path (a diffusion pipeline, a classifier, a no-grad wrapper)
is refused with one line. Any other generator can subclass :class:`LatentSpace`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from guardgen.errors import GuardgenError

__all__ = ["LatentSpace", "ZSpace", "StyleSpace", "latent_space", "parse_layers"]

RANGES = ("[-1, 1]", "[0, 1]")


class LatentSpace:
    """Base: ``sample(n, g) -> codes``, ``decode(codes) -> (B, C, H, W) in [0, 1]``.

    ``num_layers`` is the length of the layer axis a layer mask indexes; ``layer_of(key)`` says which layer a
    code belongs to (None: every row of the layer axis, see ``layer_axis``).
    """

    name = "latent"
    num_layers = 1
    layer_axis: dict[str, int] = {}  # code key -> dim indexed by the layer mask (W+ rows)

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self, codes: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def layer_of(self, key: str) -> int | None:
        return None

    def project(self, codes: dict[str, torch.Tensor]) -> None:
        """Put codes back on the prior's support after a step (in place); default: nothing."""

    def regularizer(self, codes: dict, codes0: dict) -> torch.Tensor:
        """(B,) mean squared distance to the start codes, averaged over the code tensors."""
        terms = [(codes[k] - codes0[k]).flatten(1).pow(2).mean(1) for k in codes]
        return torch.stack(terms).mean(0)


def _to_unit(x: torch.Tensor, output_range: str) -> torch.Tensor:
    x = x[0] if isinstance(x, (tuple, list)) else x
    return ((x.float() + 1) / 2).clamp(0, 1) if output_range == "[-1, 1]" else x.float().clamp(0, 1)


class ZSpace(LatentSpace):
    """z ~ N(0, I_d) -> ``generator(z)``. ``renormalize`` keeps ||z|| = sqrt(d) after each step (Gaussian shell)."""

    name = "z"

    def __init__(self, generator: nn.Module, *, output_range: str = "[-1, 1]", renormalize: bool = True):
        self.generator, self.output_range, self.renormalize = generator, output_range, renormalize
        self.latent_dim = int(getattr(generator, "latent_dim", 0) or getattr(generator, "z_dim", 0))

    def sample(self, n, generator):
        return {"z": torch.randn(n, self.latent_dim, generator=generator)}

    def decode(self, codes):
        device = next(self.generator.parameters()).device
        return _to_unit(self.generator(codes["z"].to(device)), self.output_range)

    def project(self, codes):
        if self.renormalize:
            z = codes["z"]
            z.mul_(math.sqrt(z.shape[1]) / z.norm(dim=1, keepdim=True).clamp_min(1e-8))


class StyleSpace(LatentSpace):
    """W+ codes (B, L, w_dim), started from ``mapping(z)`` broadcast to L rows; plus per-layer noise maps."""

    name = "w+"
    layer_axis = {"w": 1}

    def __init__(self, generator: nn.Module, *, output_range: str = "[-1, 1]", noise: bool = True):
        self.generator, self.output_range = generator, output_range
        self.kind = "rosinality" if hasattr(generator, "n_latent") else "nvlabs"
        if self.kind == "rosinality":
            self.num_layers, self.z_dim = int(generator.n_latent), int(generator.style_dim)
            self.noise = noise and hasattr(generator, "make_noise")
        else:
            self.num_layers, self.z_dim = int(generator.num_ws), int(generator.z_dim)
            self.noise = False  # NVlabs noise lives in buffers (noise_mode="const"); W+ only
        self.name = "w+ and noise" if self.noise else "w+"

    def _device(self):
        return next(self.generator.parameters()).device

    def sample(self, n, generator):
        z = torch.randn(n, self.z_dim, generator=generator).to(self._device())
        with torch.no_grad():
            if self.kind == "rosinality":
                w = self.generator.style(z)[:, None].repeat(1, self.num_layers, 1)
            else:
                w = self.generator.mapping(z, None)
        codes = {"w": w.float().cpu()}
        if self.noise:
            for i, nz in enumerate(self.generator.make_noise()):
                codes[f"noise_{i}"] = torch.randn((n, *nz.shape[1:]), generator=generator)
        return codes

    def decode(self, codes):
        device = self._device()
        w = codes["w"].to(device)
        if self.kind == "nvlabs":
            return _to_unit(self.generator.synthesis(w, noise_mode="const"), self.output_range)
        noise = [codes[f"noise_{i}"].to(device) for i in range(len(codes) - 1)] if self.noise else None
        out = self.generator([w], input_is_latent=True, noise=noise, randomize_noise=False)
        return _to_unit(out, self.output_range)

    def layer_of(self, key):
        return int(key.split("_")[1]) if key.startswith("noise_") else None  # noise_i is added in layer i


def latent_space(generator, *, output_range: str = "[-1, 1]", noise: bool = True, renormalize: bool = True,
                 probe: bool = True) -> LatentSpace:
    """The latent space of ``generator`` (a :class:`LatentSpace` is returned as is), probed for a gradient path."""
    if output_range not in RANGES:
        raise GuardgenError(f"unknown output range {output_range!r}; use one of {', '.join(RANGES)}")
    if isinstance(generator, (tuple, list)) and generator and isinstance(generator[0], nn.Module):
        generator = generator[0]  # load_gan's (generator, discriminator)
    name = type(generator).__name__
    if isinstance(generator, LatentSpace):
        space = generator
    elif not isinstance(generator, nn.Module):
        hint = "; diffusion pipelines are attacked on z_T by `guardgen detect attack`" if hasattr(generator, "unet") else ""
        raise GuardgenError(f"{name}: no differentiable latent path (not a torch generator with a z or W input){hint}")
    elif hasattr(generator, "n_latent") and hasattr(generator, "style") or hasattr(generator, "mapping") and hasattr(generator, "synthesis"):
        space = StyleSpace(generator, output_range=output_range, noise=noise)
    elif getattr(generator, "latent_dim", 0) or getattr(generator, "z_dim", 0):
        space = ZSpace(generator, output_range=output_range, renormalize=renormalize)
    else:
        raise GuardgenError(f"{name}: no differentiable latent path (no latent_dim / z_dim, no mapping network); "
                            "pass a GAN generator or subclass attacks.latent_spaces.LatentSpace")
    if probe:
        _probe(space, name)
    return space


def _probe(space: LatentSpace, name: str) -> None:
    codes = {k: v.clone().requires_grad_(True) for k, v in space.sample(2, torch.Generator().manual_seed(0)).items()}
    try:
        with torch.enable_grad():
            x = space.decode(codes)
    except GuardgenError:
        raise
    except Exception as err:  # noqa: BLE001 - a user generator that cannot decode its own codes
        raise GuardgenError(f"{name}: decoding a latent code failed ({type(err).__name__}: {str(err).splitlines()[0][:100]})") from None
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or len(x) != 2:
        raise GuardgenError(f"{name}: the generator did not return a (B, C, H, W) image batch")
    if not x.requires_grad:
        raise GuardgenError(f"{name}: no differentiable latent path (the image does not depend on the latent code "
                            "through autograd: no_grad, detach or a non-torch step); the attack needs gradients")


def parse_layers(spec, num_layers: int) -> tuple[int, ...]:
    """Layer mask: "" (all), "0-3,6", a list of ints, or a StyleGAN group: coarse (0-3), medium/middle (4-7), fine (8-)."""
    if spec in ("", None, ()):
        return tuple(range(num_layers))
    if isinstance(spec, str):
        groups = {"coarse": range(0, 4), "medium": range(4, 8), "middle": range(4, 8), "fine": range(8, num_layers)}
        out: list[int] = []
        for part in spec.replace(" ", "").split(","):
            if part in groups:
                out += list(groups[part])
            elif "-" in part and part.replace("-", "").isdigit():
                a, b = part.split("-")
                if int(a) > int(b):
                    raise GuardgenError(f"bad layer mask {spec!r}: the range {part} runs backwards; write {b}-{a}")
                out += list(range(int(a), int(b) + 1))
            elif part.isdigit():
                out.append(int(part))
            else:
                raise GuardgenError(f"bad layer mask {spec!r}; use indices like 0-3,6 or coarse / medium / fine")
        spec = out
    layers = tuple(sorted(set(int(i) for i in spec)))
    if not layers:
        raise GuardgenError(f"layer mask {spec!r} selects no layer; this latent space has {num_layers} layer(s)")
    if layers[0] < 0 or layers[-1] >= num_layers:
        raise GuardgenError(f"layer mask {list(layers)} is out of range: this latent space has {num_layers} layer(s) "
                            f"(0..{num_layers - 1}){'; a z-only generator has one layer' if num_layers == 1 else ''}")
    return layers
