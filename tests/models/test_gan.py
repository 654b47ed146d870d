"""Zoo GAN architectures: shapes, conditioning, folder round trip, load errors, seeded sampling."""

import pytest
import torch

from guardgen.checkpoint import load_json, save_json
from guardgen.errors import GuardgenError
from guardgen.models.gan import GAN_ARCHITECTURES, load_gan, sample_gan, save_gan

ARCHS = GAN_ARCHITECTURES.names()
SMALL = dict(width=8, latent_dim=16)


def _pair(name, **kw):
    arch = GAN_ARCHITECTURES.get(name)
    g_args = {**SMALL, **kw}
    d_args = {k: v for k, v in g_args.items() if k != "latent_dim"}
    torch.manual_seed(0)
    return arch.generator(**g_args), arch.discriminator(**d_args), g_args, d_args


def test_registry_keys():
    assert ARCHS == ["dcgan", "resnet", "upsample"]


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("resolution", [16, 32])
def test_shapes_and_range(name, resolution):
    g, d, _, _ = _pair(name, resolution=resolution, channels=3)
    assert g.latent_dim == 16
    x = g(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (3,)


@pytest.mark.parametrize("name", ARCHS)
def test_conditional(name):
    g, d, _, _ = _pair(name, num_classes=4)
    z, y = torch.randn(2, 16), torch.tensor([0, 3])
    x = g(z, y)
    assert x.shape == (2, 1, 16, 16)
    assert not torch.allclose(g.eval()(z, y), g(z, torch.tensor([1, 2])))
    assert d(x, y).shape == (2,) and d(x).shape == (2,)
    with pytest.raises(GuardgenError, match="class_labels"):
        g(z)


def test_bad_resolution():
    with pytest.raises(GuardgenError, match="resolution"):
        GAN_ARCHITECTURES.get("dcgan").generator(resolution=24)


@pytest.mark.parametrize("name", ARCHS)
def test_round_trip(tmp_path, name):
    g, d, g_args, d_args = _pair(name, num_classes=3)
    g.eval(), d.eval()
    save_gan(
        tmp_path / "gan", g, d, architecture=name, generator_args=g_args, discriminator_args=d_args, extra={"seed": 1}
    )
    config = load_json(tmp_path / "gan" / "config.json")
    assert config["seed"] == 1 and config["gan"]["architecture"] == name
    g2, d2 = load_gan(tmp_path / "gan")
    assert not g2.training and not d2.training
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.equal(g(z, y), g2(z, y))
        assert torch.equal(d(g(z, y), y), d2(g2(z, y), y))
    g3, d3 = load_gan(tmp_path / "gan", with_discriminator=False)
    assert d3 is None


def test_generator_only_and_default_discriminator_args(tmp_path):
    g, d, g_args, _ = _pair("dcgan")
    save_gan(tmp_path / "g", g, architecture="dcgan", generator_args=g_args)
    assert load_gan(tmp_path / "g")[1] is None
    save_gan(tmp_path / "gd", g, d, architecture="dcgan", generator_args=g_args)
    assert load_gan(tmp_path / "gd")[1] is not None


def test_load_errors(tmp_path):
    with pytest.raises(GuardgenError, match="no such GAN folder"):
        load_gan(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    save_json({"architecture": "resnet18"}, tmp_path / "other" / "config.json")
    with pytest.raises(GuardgenError, match="not a GAN folder"):
        load_gan(tmp_path / "other")

    g, d, g_args, d_args = _pair("dcgan")
    save_gan(tmp_path / "gan", g, d, architecture="dcgan", generator_args=g_args, discriminator_args=d_args)
    config = load_json(tmp_path / "gan" / "config.json")
    config["gan"]["architecture"] = "stylegan9"
    save_json(config, tmp_path / "gan" / "config.json")
    with pytest.raises(GuardgenError, match="dcgan, resnet, upsample"):
        load_gan(tmp_path / "gan")

    config["gan"]["architecture"] = "dcgan"
    config["gan"]["generator_args"]["width"] = 16
    save_json(config, tmp_path / "gan" / "config.json")
    with pytest.raises(GuardgenError, match=r"generator weights do not fit .*\(size mismatch for "):  # the telling line
        load_gan(tmp_path / "gan")

    config["gan"]["generator_args"]["width"] = 8
    config["gan"]["discriminator_args"]["width"] = 4
    save_json(config, tmp_path / "gan" / "config.json")
    with pytest.raises(GuardgenError, match="discriminator weights do not fit"):
        load_gan(tmp_path / "gan")
    assert load_gan(tmp_path / "gan", with_discriminator=False)[1] is None


@pytest.mark.parametrize("name", ARCHS)
def test_sample_gan_seeded(name):
    g, _, _, _ = _pair(name, num_classes=2)
    g.eval()
    a = sample_gan(g, 5, generator_rng=torch.Generator().manual_seed(3), batch_size=2)
    b = sample_gan(g, 5, generator_rng=torch.Generator().manual_seed(3))
    c = sample_gan(g, 5, generator_rng=torch.Generator().manual_seed(4))
    assert a.shape == (5, 1, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)
    fixed = sample_gan(g, 3, generator_rng=torch.Generator().manual_seed(3), class_labels=1)
    assert fixed.shape == (3, 1, 16, 16)
    with pytest.raises(GuardgenError, match="class_labels"):
        sample_gan(g, 3, class_labels=[0, 1])


def test_sample_gan_unconditional_refuses_labels():
    g, _, _, _ = _pair("dcgan")
    with pytest.raises(GuardgenError, match="unconditional"):
        sample_gan(g.eval(), 2, class_labels=0)


@pytest.mark.parametrize("change,message", [
    (lambda c: c.update(gan=[1]), "has a 'gan' entry that is a list, not an object"),
    (lambda c: c["gan"].pop("architecture"), "'gan' names no architecture"),
    (lambda c: c["gan"]["generator_args"].update(latent_dim=-3), "bad generator_args for 'dcgan'"),
])
def test_a_damaged_gan_config_is_one_line(tmp_path, change, message):
    g, d, g_args, d_args = _pair("dcgan")
    folder = save_gan(tmp_path / "gan", g, d, architecture="dcgan", generator_args=g_args, discriminator_args=d_args)
    config = load_json(folder / "config.json")
    change(config)
    save_json(config, folder / "config.json")
    with pytest.raises(GuardgenError, match=message):
        load_gan(folder)
