import os

import pytest
import torch

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
