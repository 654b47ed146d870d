"""Section 6, copyright: near access-freeness of the model against shard models (Vyas et al. 2023).

The numbers come from ``guardgen.copyright``. The coupling is one call, kept thin on purpose:

    guardgen.copyright.audit_naf(model, shards, *, conditions, samples, seed) -> dict

with ``model`` the audited pipeline, ``shards`` the loaded shard pipelines, and a dict holding at least
``k_values`` (per-prompt k_x, bits), ``k_threshold``, ``acceptance`` (CP-k acceptance rate nu_k) and
``effective_k`` (k + log2(1 / nu_k)). Where the module or the call is missing, the section says so.
"""

from __future__ import annotations

import importlib
import inspect

from guardgen.audit._base import Section, not_run
from guardgen.errors import GuardgenError

__all__ = ["check_shards", "copyright_section"]

LIMITATIONS = [
    "k is estimated with a per-denoising-step Gaussian likelihood proxy, not exact likelihoods.",
    "NAF bounds extra probability due to access relative to shard models; it is not a legal test of infringement "
    "(Elkin-Koren et al. 2024), and NAF models can still be 'tainted' (Cohen 2025).",
    "The guarantee holds only if every protected work and its near-duplicates sit in exactly one shard.",
]


def check_shards(shard_specs: list, subject=None) -> None:
    """Cheap checks of --shards before any section runs: each resolves to a diffusion pipeline folder, and, with
    ``subject`` (the loaded audited model), samples in the same space as it. The shards are loaded in the section."""
    from guardgen.checkpoint import load_json
    from guardgen.models import model_folder

    if not shard_specs:
        return
    if subject is not None and (subject.kind == "gan" or subject.cond is None):
        raise GuardgenError(f"--shards: the copyright (NAF) section needs a class- or text-conditional diffusion pipeline, "
                            f"and {subject.spec} is {'a GAN' if subject.kind == 'gan' else 'unconditional'}")
    for spec in shard_specs:
        try:
            ref, path = model_folder(spec)
        except GuardgenError as err:
            raise GuardgenError(f"--shards {str(err).splitlines()[0]}") from None  # the message starts with the spec
        if ref.kind != "pipeline":
            raise GuardgenError(f"--shards {spec}: holds a {ref.kind}, not a diffusion pipeline folder (model_index.json)")
        unet = getattr(getattr(subject, "model", None), "unet", None)
        if unet is not None and (path / "unet" / "config.json").is_file():
            config = load_json(path / "unet" / "config.json")
            theirs = _space(config) if isinstance(config, dict) else None
            ours = _space(dict(unet.config))
            if theirs != ours:
                raise GuardgenError(f"--shards {spec}: samples in another space than {subject.spec} ((channels, size, "
                                    f"conditioning) {theirs} vs {ours}); shards must share the audited model's architecture family")


def copyright_section(subject, shard_specs: list, conditions: list, *, config) -> Section:
    if not shard_specs:
        return not_run("copyright", "no shard models given (--shards SPEC SPEC)", LIMITATIONS)
    try:
        naf = importlib.import_module("guardgen.copyright")
    except ImportError as err:
        return not_run("copyright", f"guardgen.copyright is not available here ({err})", LIMITATIONS)
    fn = getattr(naf, "audit_naf", None)
    if fn is None:
        return not_run("copyright", "guardgen.copyright has no audit_naf(model, shards, ...) entry point yet", LIMITATIONS)
    from guardgen.audit.subject import load_subject

    device = getattr(subject.model, "device", "cpu")  # a pipeline's; the shards sit beside it
    shards = [load_subject(s, device=str(device)).model for s in shard_specs]
    extra = {"num_inference_steps": config.num_inference_steps} if "num_inference_steps" in inspect.signature(fn).parameters else {}
    result = fn(subject.model, shards, conditions=conditions, samples=config.copyright_samples, seed=config.seed, **extra)
    figures = {k: v for k, v in dict(result).items() if k != "k_values"}
    ks = [float(k) for k in result.get("k_values", [])]
    if ks:
        figures.update({"k_median": sorted(ks)[len(ks) // 2], "k_max": max(ks), "prompts": len(ks)})
    plots = {"k": {"kind": "hist", "series": {"k_x (bits)": ks}, "xlabel": "k_x (bits)", "ylabel": "share",
                   "threshold": result.get("k_threshold")}} if ks else {}
    return Section(name="copyright", figures=figures, plots=plots, limitations=LIMITATIONS)


def _space(unet_config: dict) -> tuple:
    """(channels, size, conditioning) a UNet samples in, read from its config (as ``conditioning_for`` tells them)."""
    size = unet_config.get("sample_size")
    conditioning = "class" if unet_config.get("num_class_embeds") else "text" if unet_config.get("cross_attention_dim") else "none"
    return unet_config.get("in_channels"), tuple(size) if isinstance(size, (list, tuple)) else size, conditioning
