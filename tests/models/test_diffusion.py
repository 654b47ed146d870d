import json
import re

import pytest
import torch

from guardgen.errors import GuardgenError
from guardgen.models import load_model, resolve
from guardgen.models.diffusion import load_diffusion, sample_class_conditional


def test_guardgen_pipeline_loads_and_samples_reproducibly(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    labels = torch.tensor([0, 3, 9])
    a = sample_class_conditional(pipe, labels, num_inference_steps=3, guidance_scale=2.0, seed=1)
    b = sample_class_conditional(pipe, labels, num_inference_steps=3, guidance_scale=2.0, seed=1)
    c = sample_class_conditional(pipe, labels, num_inference_steps=3, guidance_scale=2.0, seed=2)
    assert a.shape == (3, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_class_label_changes_the_sample(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    with torch.no_grad():
        pipe.unet.class_embedding.weight.mul_(50)  # make conditioning matter in a random net
    x = sample_class_conditional(pipe, torch.tensor([1, 2]), num_inference_steps=2, seed=0)
    assert not torch.allclose(x[0], x[1])


def test_stock_diffusers_loads_the_folder(tiny_class_pipeline):
    from diffusers import DiffusionPipeline

    index = json.loads((tiny_class_pipeline / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_guardgen", "ClassConditionalPipeline"]
    pipe = DiffusionPipeline.from_pretrained(tiny_class_pipeline, trust_remote_code=True)
    out = pipe([4], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 1, 8, 8)


def test_out_of_range_label_is_refused(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    with pytest.raises(ValueError, match="class labels"):
        pipe([10], num_inference_steps=1)


def test_unet_model_folder_and_condition_model_folder(tmp_path):
    from diffusers import UNet2DConditionModel, UNet2DModel

    UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D")).save_pretrained(tmp_path / "u")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                         norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).save_pretrained(tmp_path / "c")
    assert resolve(str(tmp_path / "u")).kind == "diffusion-model"
    assert type(load_model(str(tmp_path / "u"))).__name__ == "UNet2DModel"
    assert type(load_model(str(tmp_path / "c"))).__name__ == "UNet2DConditionModel"


def test_tiny_stable_diffusion_pipeline_loads(tiny_sd_pipeline):
    loaded = load_model(str(tiny_sd_pipeline))
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    img = loaded("a handwritten digit seven", num_inference_steps=2, height=8, width=8, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 8, 8, 3)


def test_a_prompt_longer_than_the_clip_tokenizer_reads_is_refused(tiny_sd_pipeline):
    from guardgen.models.conditioning import conditioning_for

    cond = conditioning_for(load_model(str(tiny_sd_pipeline)))
    assert cond.parse("a " * 75) == ("a " * 75).strip()  # 75 tokens + start and end: exactly the 77 CLIP reads
    with pytest.raises(GuardgenError, match="is 78 tokens; this text encoder reads at most 77"):
        cond.parse("a " * 76)


def test_truncated_unet_weights_fail_in_one_line(tiny_class_pipeline):
    weights = next((tiny_class_pipeline / "unet").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(GuardgenError, match="corrupt or truncated"):
        load_diffusion(tiny_class_pipeline)


def test_quantised_unet_weights_are_refused(tiny_class_pipeline):
    from safetensors.torch import load_file, save_file

    weights = next((tiny_class_pipeline / "unet").glob("*.safetensors"))
    save_file({k: (v * 100).to(torch.int8) for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.raises(GuardgenError, match=r"is int8; guardgen loads floating-point weights"):
        load_diffusion(tiny_class_pipeline)


def test_pickle_only_folder_is_refused(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    torch.save({"w": torch.ones(1)}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(GuardgenError, match="safetensors"):
        load_model(str(folder))


def test_ddim_sample_is_the_deterministic_ddim_update_under_guidance(tiny_class_pipeline):
    from guardgen.models.conditioning import conditioning_for, ddim_sample

    pipe = load_diffusion(tiny_class_pipeline)
    unet, sched, cond = pipe.unet, pipe.scheduler, conditioning_for(pipe)
    sched.set_timesteps(4)
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    c, null = cond.embed([1, 2, 3], "cpu"), cond.null(3, "cpu")
    abar = sched.alphas_cumprod

    # by hand: x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), clipped (the scheduler's clip_sample),
    # then x <- sqrt(a_prev) x0 + sqrt(1 - a_prev) eps
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps[1:3]:
            eps_c, eps_u = unet(x, t, **c).sample, unet(x, t, **null).sample
            eps = eps_u + 2.0 * (eps_c - eps_u)
            prev = int(t) - sched.config.num_train_timesteps // 4
            a_t, a_prev = abar[int(t)], abar[prev] if prev >= 0 else torch.tensor(1.0)
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        ours = ddim_sample(unet, sched, x_T, c, null, 2.0, timesteps=sched.timesteps[1:3])
    assert torch.allclose(ours, x, atol=1e-5)

    calls = []
    with torch.no_grad():
        hooked = ddim_sample(unet, sched, x_T, c, null, 2.0, timesteps=sched.timesteps[1:3],
                             run=lambda fn, xx: calls.append(xx.shape) or fn(xx))
    assert torch.equal(hooked, ours) and calls == [x_T.shape] * 2  # run() evaluates every noise prediction
    with torch.no_grad():
        assert not torch.allclose(ddim_sample(unet, sched, x_T, c, null, 1.0, timesteps=sched.timesteps[1:3]), ours, atol=1e-3)


@pytest.mark.parametrize("damage,message", [
    ("no_unet", "model_index.json names a unet (UNet2DModel), but there is no unet/ folder"),
    ("no_scheduler", "there is no scheduler/ folder"),
    ("index_list", "model_index.json: expected a JSON object naming the pipeline's parts, found a list"),
    ("config_list", "config.json: expected a JSON object of settings, found a list"),
    ("no_weights", "no weights (a .safetensors file) beside its config.json"),
])
def test_a_damaged_pipeline_folder_is_one_line_without_asking_the_hub(tiny_class_pipeline, damage, message):
    import shutil
    import time

    folder = tiny_class_pipeline
    if damage == "no_unet":
        shutil.rmtree(folder / "unet")
    elif damage == "no_scheduler":
        shutil.rmtree(folder / "scheduler")
    elif damage == "index_list":
        (folder / "model_index.json").write_text("[1]")
    elif damage == "config_list":
        (folder / "unet" / "config.json").write_text("[1, 2]")
    else:
        for path in (folder / "unet").glob("*.safetensors"):
            path.unlink()
    t0 = time.perf_counter()
    with pytest.raises(GuardgenError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(str(folder))
    assert time.perf_counter() - t0 < 5  # diffusers asked the hub for a missing part, with retries (30 s)


@pytest.mark.parametrize("run,message", [("[1]", "run.json: expected a JSON object"),
                                         ('"x"', "run.json: expected a JSON object"),
                                         ('{"model_path": 5}', "'model_path' must name the run's model subfolder")])
def test_a_run_record_that_is_not_an_object_is_one_line(tiny_class_pipeline, run, message):
    (tiny_class_pipeline / "run.json").write_text(run)
    with pytest.raises(GuardgenError, match=message):
        resolve(str(tiny_class_pipeline))


@pytest.mark.parametrize("part,file,key,value,message", [
    ("", "model_index.json", "unet", ["diffusers", "NoSuchUNet"], "its unet is diffusers.NoSuchUNet, which is not installed"),
    ("unet", "config.json", "sample_size", "sixteen", "UNet2DModel sample_size is 'sixteen', not a whole number"),
    ("scheduler", "scheduler_config.json", "num_train_timesteps", "1000", "cannot load the pipeline ("),
])
def test_a_config_of_wrong_types_is_one_line(tiny_class_pipeline, part, file, key, value, message):
    path = tiny_class_pipeline / part / file
    config = json.loads(path.read_text())
    config[key] = value
    path.write_text(json.dumps(config))
    with pytest.raises(GuardgenError, match=re.escape(message)) as err:
        load_diffusion(tiny_class_pipeline)
    assert "\n" not in str(err.value)
