"""Conditioning of diffusion UNets, one interface for class ids and text prompts.

A method asks ``cond.embed(conds)`` for the keyword arguments of ``unet(x, t, **kwargs)`` and
``cond.null(n)`` for the unconditional ones (classifier-free guidance); it never needs to know
whether the model is a class-conditional ``UNet2DModel`` or a text-conditional ``UNet2DConditionModel``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from guardgen.errors import GuardgenError

__all__ = ["ClassConditioning", "TextConditioning", "conditioning_for", "guided_eps", "ddim_sample"]


class ClassConditioning:
    """Class ids ``0..num_classes-1``; id ``num_classes`` is the null class (CFG)."""

    kind = "class"

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None):
        self.num_classes = num_classes
        self.class_names = list(class_names or [str(c) for c in range(num_classes)])

    def parse(self, concept) -> int:
        """A class id from ``7``, ``"7"`` or a class name; unknown -> one-line error."""
        text = str(concept).strip()
        if text in self.class_names:
            return self.class_names.index(text)
        if text.isascii() and text.isdigit() and int(text) < self.num_classes:  # "²" is a digit to isdigit, not to int
            return int(text)
        raise GuardgenError(f"unknown class {concept!r}; this model has classes 0..{self.num_classes - 1}")

    def all_concepts(self) -> list[int]:
        return list(range(self.num_classes))

    def embed(self, conds: Sequence[int] | torch.Tensor, device="cpu") -> dict:
        return {"class_labels": torch.as_tensor(conds, dtype=torch.long, device=device).flatten()}

    def null(self, n: int, device="cpu") -> dict:
        return {"class_labels": torch.full((n,), self.num_classes, dtype=torch.long, device=device)}


class TextConditioning:
    """Prompts, embedded by a frozen ``encode(prompts) -> (B, L, D)``; embeddings are cached per prompt."""

    kind = "text"

    def __init__(self, encode: Callable[[list[str]], torch.Tensor], null_prompt: str = "", *,
                 count_tokens: Callable[[str], int] | None = None, max_tokens: int | None = None):
        self.encode = encode
        self.null_prompt = null_prompt
        self.count_tokens, self.max_tokens = count_tokens, max_tokens
        self._cache: dict[str, torch.Tensor] = {}

    def parse(self, concept) -> str:
        """A prompt from ``concept``; empty, or longer than the text encoder reads (its end would be cut off
        silently, the concept perhaps with it) -> one-line error."""
        text = str(concept).strip()
        if not text:
            raise GuardgenError("empty prompt; a text concept is a phrase such as 'a handwritten digit seven'")
        if self.count_tokens is not None and self.max_tokens is not None:
            n = self.count_tokens(text)
            if n > self.max_tokens:
                shown = text if len(text) <= 40 else text[:40] + "..."
                raise GuardgenError(f"prompt {shown!r} is {n} tokens; this text encoder reads at most {self.max_tokens} "
                                    "and would ignore the rest: shorten it")
        return text

    def _embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            with torch.no_grad():
                for p, e in zip(missing, self.encode(missing)):
                    self._cache[p] = e.detach().float().cpu()
        return torch.stack([self._cache[p] for p in prompts])

    def embed(self, conds: Sequence[str], device="cpu") -> dict:
        return {"encoder_hidden_states": self._embeddings(list(conds)).to(device)}

    def null(self, n: int, device="cpu") -> dict:
        return self.embed([self.null_prompt] * n, device)


def guided_eps(unet, x: torch.Tensor, t: torch.Tensor, cond: dict, null: dict | None, guidance_scale: float) -> torch.Tensor:
    """Noise prediction with classifier-free guidance: eps_u + w (eps_c - eps_u); w = 1 is plain conditional.

    ``x`` and floating-point conditions are cast to the UNet's dtype (a float16 pipeline takes float32 latents).
    """
    dtype = getattr(unet, "dtype", x.dtype)

    def cast(kwargs: dict) -> dict:
        return {k: v.to(dtype) if v.is_floating_point() else v for k, v in kwargs.items()}

    x, cond, null = x.to(dtype), cast(cond), None if null is None else cast(null)
    if guidance_scale == 1.0 or null is None:
        return unet(x, t, **cond).sample
    both = {k: torch.cat([cond[k], null[k]]) for k in cond}
    eps_c, eps_u = unet(torch.cat([x, x]), torch.cat([t, t]) if t.ndim else t, **both).sample.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def ddim_sample(unet, scheduler, x: torch.Tensor, cond: dict, null: dict | None = None, guidance_scale: float = 1.0, *,
                timesteps: Sequence | None = None, run: Callable | None = None) -> torch.Tensor:
    """Deterministic DDIM (eta = 0): (B, C, H, W) ``x`` at the first of ``timesteps`` (default: all of the
    ``scheduler``'s, after its ``set_timesteps``) -> the sample after them, guided by :func:`guided_eps`.

    Each noise prediction is taken in float32 before the update. ``run(fn, x)``, if given, evaluates
    ``fn(x)`` (gradient checkpointing, say)."""
    for t in scheduler.timesteps if timesteps is None else timesteps:
        tt = t.to(x.device)

        def eps_at(xx, tt=tt):
            return guided_eps(unet, xx, tt, cond, null, guidance_scale).float()

        x = scheduler.step(eps_at(x) if run is None else run(eps_at, x), t, x, eta=0.0).prev_sample
    return x


def conditioning_for(pipe):
    """The conditioning of a loaded pipeline (class-conditional, the zoo's text model, or Stable Diffusion)."""
    name = type(pipe).__name__
    if getattr(pipe.unet.config, "num_class_embeds", None):
        num = int(getattr(pipe.config, "num_classes", 0) or pipe.unet.config.num_class_embeds - 1)
        return ClassConditioning(num)
    if hasattr(pipe, "encode_text") and getattr(pipe, "text_encoder", None) is None:  # guardgen text pipelines
        return TextConditioning(pipe.encode_text)
    if getattr(pipe, "text_encoder", None) is not None and getattr(pipe, "tokenizer", None) is not None:
        def encode(prompts: list[str]) -> torch.Tensor:
            tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            return pipe.text_encoder(tok.input_ids.to(pipe.text_encoder.device))[0]

        def count_tokens(prompt: str) -> int:  # what the tokenizer makes of it untruncated, start and end tokens included
            return len(pipe.tokenizer.tokenize(prompt)) + pipe.tokenizer.num_special_tokens_to_add()

        return TextConditioning(encode, count_tokens=count_tokens, max_tokens=pipe.tokenizer.model_max_length)
    raise GuardgenError(f"{name}: the model has no class or text conditioning to unlearn a concept from")
