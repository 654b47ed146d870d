"""Class-conditional DDPM/DDIM sampling with classifier-free guidance (a guardgen pipeline for diffusers).

Self-contained: imports only torch and diffusers (copied into saved folders as ``pipeline_guardgen.py``).
The UNet is a ``UNet2DModel`` with ``num_class_embeds = num_classes + 1``; the last class id is the
"null" label used for classifier-free guidance.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput


class ClassConditionalPipeline(DiffusionPipeline):
    """``pipe(class_labels, num_inference_steps=50, guidance_scale=1.0)`` -> images in [0, 1].

    Returns ``ImagePipelineOutput``; ``output_type="pt"`` gives a (B, C, H, W) tensor, ``"pil"`` a list
    of PIL images, ``"np"`` an array (B, H, W, C).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, num_classes: int = 10):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(num_classes=num_classes)

    @property
    def null_class(self) -> int:
        return int(self.config.num_classes)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: Union[List[int], torch.Tensor],
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: Optional[torch.Generator] = None,
        latents: Optional[torch.Tensor] = None,
        eta: float = 0.0,
        output_type: str = "pt",
        return_dict: bool = True,
    ):
        device = self._execution_device if hasattr(self.unet, "_hf_hook") else self.unet.device  # offloaded: where it runs
        labels = torch.as_tensor(class_labels, dtype=torch.long).flatten().to(device)
        if (labels < 0).any() or (labels >= self.null_class).any():
            raise ValueError(f"class labels must be in [0, {self.null_class - 1}]")
        cfg = self.unet.config
        shape = (len(labels), cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device="cpu" if generator is None else generator.device)
        x = latents.to(device=device, dtype=self.unet.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        null = torch.full_like(labels, self.null_class)
        for t in self.progress_bar(self.scheduler.timesteps):
            if guidance_scale == 1.0:
                eps = self.unet(x, t, class_labels=labels).sample
            else:
                eps_c, eps_u = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.chunk(2)
                eps = eps_u + guidance_scale * (eps_c - eps_u)
            kwargs = {"eta": eta} if "eta" in self.scheduler.step.__code__.co_varnames else {}
            x = self.scheduler.step(eps, t, x, generator=generator, **kwargs).prev_sample
        images = ((x.float() + 1) / 2).clamp(0, 1)
        if output_type == "pil":
            images = self.numpy_to_pil(images.cpu().permute(0, 2, 3, 1).numpy())
        elif output_type == "np":
            images = images.cpu().permute(0, 2, 3, 1).numpy()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
