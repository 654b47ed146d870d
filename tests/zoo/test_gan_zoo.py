"""Zoo GANs: entries, a tiny seeded build that loads back, the loss functions, and the shipped weights."""

import pytest
import torch

from guardgen import zoo
from guardgen.errors import GuardgenError
from guardgen.zoo.gan import GANConfig, build_gan, gan_losses, recalibrate_batchnorm

GAN_NAMES = ["mnist-gan", "mnist-gan-dcgan-s1", "mnist-gan-upsample", "mnist-gan-upsample-s1", "mnist-gan-resnet",
             "mnist-gan-resnet-s1"]
TINY = dict(steps=3, batch_size=8, width=4, d_width=4, latent_dim=8, device="cpu", checkpoint_every=2)


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    """One thread, and a small stand-in for MNIST (decoding the real set takes seconds on a busy CPU)."""
    from guardgen.data import ImageSet

    fake = ImageSet(torch.rand(64, 1, 16, 16), torch.arange(64) % 10, [str(c) for c in range(10)], "fake")
    monkeypatch.setattr("guardgen.zoo.gan.load_mnist", lambda split, resolution=16, exclude=(): fake)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_entries_cover_three_architectures_and_two_seeds():
    assert set(GAN_NAMES) <= set(zoo.zoo_names())
    configs = [zoo.config_class(n)() for n in GAN_NAMES]
    assert {c.architecture for c in configs} == {"dcgan", "upsample", "resnet"}
    assert len({(c.architecture, c.seed + c.seed_offset) for c in configs}) == len(GAN_NAMES)
    assert all(zoo.ZOO[n].kind == "gan" for n in GAN_NAMES)


@pytest.mark.parametrize("arch", ["dcgan", "resnet"])
def test_tiny_build_is_seeded_and_loads(tmp_path, arch):
    from guardgen.checkpoint import load_json, load_safetensors
    from guardgen.models import load_model, resolve

    oracle = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 10))
    oracle.forward_features = lambda x: x.flatten(1)[:, :12]  # a stand-in oracle with "features"
    oracle.forward_head = lambda f, pre_logits=False: f
    cfg = GANConfig(architecture=arch, eval_samples=40, **TINY)
    m1 = build_gan(cfg, tmp_path / "a", oracle=oracle)
    build_gan(cfg, tmp_path / "b", oracle=oracle)
    w1, w2 = (load_safetensors(tmp_path / x / "generator.safetensors") for x in "ab")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert sum(m1["class_histogram"]) == 40 and m1["fd_oracle"] > 0
    assert resolve(str(tmp_path / "a")).kind == "gan"
    g, d = load_model(str(tmp_path / "a"), kind="gan")
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 1, 16, 16) and d(x).shape == (2,)
    config = load_json(tmp_path / "a" / "config.json")
    assert config["zoo"] == "mnist-gan" and config["train_config"]["architecture"] == arch
    assert (tmp_path / "a" / "README.md").read_text().startswith("# mnist-gan")
    assert not (tmp_path / "a" / "training_state").exists()


def test_resume_reaches_the_same_weights(tmp_path):
    from guardgen.checkpoint import load_safetensors

    cfg = GANConfig(eval_samples=0, **{**TINY, "steps": 4})
    build_gan(cfg, tmp_path / "straight")

    def stop(step, logs):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_gan(cfg, tmp_path / "r", callback=stop)
    assert (tmp_path / "r" / "training_state" / "state.json").is_file()
    with pytest.raises(GuardgenError, match="used other settings \\(lr_g\\)"):
        build_gan(GANConfig(eval_samples=0, **{**TINY, "steps": 4, "lr_g": 1e-3}), tmp_path / "r", resume=True)
    build_gan(cfg, tmp_path / "r", resume=True)
    a, b = (load_safetensors(tmp_path / x / "generator.safetensors") for x in ("straight", "r"))
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_losses_by_hand():
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    sp = torch.nn.functional.softplus
    assert gan_losses("ns", real, fake, for_generator=False).item() == pytest.approx((sp(-real) + sp(fake)).item())
    assert gan_losses("ns", None, fake, for_generator=True).item() == pytest.approx(sp(torch.tensor(1.0)).item())
    assert gan_losses("hinge", real, fake, for_generator=False).item() == pytest.approx(0.0)
    assert gan_losses("hinge", None, fake, for_generator=True).item() == pytest.approx(1.0)
    with pytest.raises(GuardgenError, match="unknown GAN loss"):
        gan_losses("wgan", real, fake, for_generator=True)


def test_batchnorm_recalibration_matches_batch_statistics():
    from guardgen.models.gan import DCGANGenerator

    g = DCGANGenerator(latent_dim=8, width=4)
    recalibrate_batchnorm(g, batches=4, batch_size=64)
    bn = g.net[1]
    assert bn.momentum == 0.1 and bn.num_batches_tracked == 4
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


@pytest.mark.parametrize("name", GAN_NAMES)
def test_shipped_weights_load_and_sample(name):
    from guardgen.models import load_model
    from guardgen.models.gan import sample_gan

    try:
        path = zoo.zoo_path(name)
    except GuardgenError:
        pytest.skip(f"{name} is not built here")
    g, d = load_model(f"zoo:{name}", kind="gan")
    x = sample_gan(g, 4, generator_rng=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert (path / "README.md").is_file() and d is not None
