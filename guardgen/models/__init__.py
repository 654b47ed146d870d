"""Shared model loaders: one spec string (``zoo:NAME``, a folder, ``hf:ORG/NAME``), one loader per kind.

Loaders return plain ecosystem objects (a diffusers pipeline or model, a timm ``nn.Module``, a GAN
generator/discriminator pair); methods work on those directly.
"""

from __future__ import annotations

from guardgen.models.spec import KINDS, ModelRef, folder_kind, resolve

__all__ = ["ModelRef", "resolve", "folder_kind", "load_model", "model_folder", "KINDS"]


def model_folder(spec: str):
    """``(ref, folder holding the weights)``: a run folder points at its model through ``model_path``."""
    ref = resolve(spec)
    path = ref.path
    if ref.run is not None and ref.run.get("model_path"):
        path = path / ref.run["model_path"]
    return ref, path


def load_model(spec: str, *, kind: str | None = None, device: str = "cpu", allow_pickle: bool = False):
    """Resolve ``spec`` and load what it holds; ``kind`` (pipeline, classifier, ...) asserts what is expected."""
    from guardgen.errors import GuardgenError

    ref, path = model_folder(spec)
    if kind is not None and ref.kind != kind and not (kind == "diffusion" and ref.kind in ("pipeline", "diffusion-model")):
        raise GuardgenError(f"{spec}: holds a {ref.kind}, but a {kind} is needed here")
    if ref.kind in ("pipeline", "diffusion-model"):
        from guardgen.models.diffusion import load_diffusion

        return load_diffusion(path, device=device)
    if ref.kind == "classifier":
        from guardgen.models.classifier import load_classifier

        return load_classifier(path, device=device, allow_pickle=allow_pickle)
    if ref.kind == "gan":
        from guardgen.models.gan import load_gan

        return load_gan(path, device=device)
    raise GuardgenError(f"{spec}: no loader for kind {ref.kind!r}")
