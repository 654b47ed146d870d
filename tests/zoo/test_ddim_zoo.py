"""mnist-ddim-b: a second zoo diffusion model, other UNet blocks and scheduler than mnist-ddpm."""

import json

from guardgen import zoo
from guardgen.models import load_model
from guardgen.models.diffusion import sample_images


def test_shipped_model_differs_from_mnist_ddpm_and_samples():
    a, b = load_model("zoo:mnist-ddpm"), load_model("zoo:mnist-ddim-b")
    assert a.unet.config.down_block_types != b.unet.config.down_block_types
    assert a.unet.config.block_out_channels != b.unet.config.block_out_channels
    assert b.scheduler.config.beta_schedule == "squaredcos_cap_v2" != a.scheduler.config.beta_schedule
    x = sample_images(b, [3, 7], num_inference_steps=2, seed=0)
    assert x.shape == (2, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    meta = json.loads((zoo.zoo_path("mnist-ddim-b") / "guardgen.json").read_text())
    assert meta["metrics"]["conditional_accuracy"] >= 0.8
    assert (zoo.zoo_path("mnist-ddim-b") / "README.md").is_file()


def test_build_runs_from_the_zoo_entry(tmp_path):
    metrics = zoo.build("mnist-ddim-b", tmp_path / "m", steps=2, eval_samples_per_class=0, device="cpu",
                        block_out_channels=(8, 16))
    assert metrics["steps"] == 2
    assert load_model(str(tmp_path / "m")).scheduler.config.timestep_spacing == "trailing"
