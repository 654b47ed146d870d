import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_class_pipeline(tmp_path):
    """A tiny random class-conditional pipeline folder built from configs (diffusers-test style)."""
    from diffusers import DDIMScheduler

    from guardgen.models.diffusion import class_conditional_unet, save_pipeline
    from guardgen.models.pipelines import ClassConditionalPipeline

    unet = class_conditional_unet(resolution=8, block_out_channels=(8, 16), attention_levels=(False, True), norm_num_groups=4)
    pipe = ClassConditionalPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100), num_classes=10)
    return save_pipeline(pipe, tmp_path / "tiny-ddpm")


@pytest.fixture
def tiny_sd_pipeline(tmp_path):
    """A tiny random Stable Diffusion pipeline folder (diffusers-test style), CLIP text encoder included."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from guardgen.models.text import tiny_clip_text_encoder

    torch.manual_seed(0)
    text_encoder, tokenizer = tiny_clip_text_encoder()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                                norm_num_groups=4, cross_attention_dim=32, attention_head_dim=2,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=DDIMScheduler(clip_sample=False, steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "tiny-sd")
    return tmp_path / "tiny-sd"


def make_sources(n: int, seed: int, res: int = 8, n_src: int = 5):
    """Smooth random images plus one fixed high-frequency fingerprint per source (source 0 has none: "real")."""
    g = torch.Generator().manual_seed(seed)
    fingerprints = torch.randn(n_src, 1, res, res, generator=torch.Generator().manual_seed(123)) * 0.2
    fingerprints[0] = 0
    xs, ys = [], []
    for s in range(n_src):
        base = F.avg_pool2d(torch.rand(n, 1, 2 * res, 2 * res, generator=g), 2)
        xs.append((base * 0.6 + 0.2 + fingerprints[s]).clamp(0, 1))
        ys.append(torch.full((n,), s))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="session", name="make_sources")
def make_sources_fixture():
    """``make_sources(n, seed)``: n images per source of 5 sources with planted fingerprints, and their labels."""
    return make_sources


class Interrupted(Exception):
    """A run cut short by a ``stop_at`` callback, where Ctrl-C would have stopped it."""


@pytest.fixture(name="stop_at")
def stop_at_fixture():
    """``stop_at(n, stage=None)``: a ``callback(step, logs)`` raising ``stop_at.error`` at step ``n`` (of that stage)."""

    def make(n: int, stage: str | None = None):
        def callback(step, logs):
            if step == n and (stage is None or logs.get("stage") == stage):
                raise Interrupted
        return callback

    make.error = Interrupted
    return make
