"""Latent evasion: white-box success with the attribute kept, reference guidance, W+ layer masks and noise,
ensemble / meta transfer modes, resized detectors, OMAT against latent attacks, and bad input."""

import pytest
import torch
from torch import nn

from attacks import ATTACKS
from attacks.latent_evasion import LatentEvasion, detector_views, parse_attribute
from attacks.latent_spaces import StyleSpace, ZSpace, latent_space, parse_layers
from guardgen.errors import GuardgenError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tiny models run faster than with two on a shared 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_gan():
    """The zoo DCGAN (0.5 MB, trained on MNIST): a random tiny GAN's images barely depend on z."""
    from guardgen.models import load_model

    return load_model("zoo:mnist-gan")[0]


class Brightness(nn.Module):
    """A differentiable toy detector: fake logit = scale * (mean brightness - level)."""

    def __init__(self, level: float, scale: float = 40.0, input_size=None):
        super().__init__()
        self.scale, self.level = nn.Parameter(torch.tensor(scale)), level
        if input_size:
            self.input_size = input_size

    def forward(self, x):
        return self.scale * (x.flatten(1).mean(1) - self.level)


class LeftRight(nn.Module):
    """A toy attribute classifier: class 0 = brighter left half, class 1 = brighter right half."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x):
        w = x.shape[-1] // 2
        return self.scale * torch.stack([x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))], 1)


@torch.no_grad()
def level_below_clean(space, quantile=0.1):
    x = space.decode(space.sample(64, torch.Generator().manual_seed(1)))
    return float(x.flatten(1).mean(1).quantile(quantile)) - 0.01


def test_white_box_success_keeps_the_attribute():
    space = latent_space(tiny_gan())
    assert isinstance(space, ZSpace) and ATTACKS.get("latent_evasion") is LatentEvasion
    det = Brightness(level_below_clean(space))
    res = LatentEvasion(steps=40, lr=0.1, reg_weight=0.1, candidates=8).attack(space, [det], 8, classifier=LeftRight(), target=1)
    assert (res.score_before[:, 0] > 0.5).float().mean() >= 0.8  # clean fakes are caught
    assert res.success.float().mean() >= 0.75
    assert res.attribute_after.float().mean() >= 0.75 and bool((res.targets == 1).all())
    assert res.images.shape == (8, 1, 16, 16) and (res.drift > 0).all()
    norms = res.codes["z"].norm(dim=1) / 32 ** 0.5
    assert torch.allclose(norms, torch.ones(8), atol=1e-4)  # z stays on the Gaussian shell


def test_reference_guidance_moves_towards_the_reference():
    space = latent_space(tiny_gan())
    ref = torch.zeros(1, 16, 16)
    ref[:, :, 8:] = 1.0
    res = LatentEvasion(steps=20, lr=0.1, detector_weight=0.0, reg_weight=0.0, candidates=1).attack(
        space, [Brightness(0.0)], 4, reference=ref)
    cos = lambda x: nn.functional.cosine_similarity(x.flatten(1), ref.flatten()[None], dim=1)  # noqa: E731
    assert (cos(res.images) > cos(res.clean)).float().mean() >= 0.9
    assert res.feature_distance is not None and res.targets is None


class TinyStyleGAN(nn.Module):
    """rosinality-style: style(z) -> w, n_latent W+ rows, make_noise(), g([w], input_is_latent=True, noise=...)."""

    def __init__(self):
        super().__init__()
        self.style_dim, self.n_latent = 8, 4
        self.style = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8))
        self.const = nn.Parameter(torch.randn(1, 4, 4, 4))
        self.affine = nn.ModuleList(nn.Linear(8, 4) for _ in range(4))
        self.conv = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(4))
        self.to_img = nn.Conv2d(4, 1, 1)

    def make_noise(self):
        return [torch.randn(1, 1, s, s) for s in (4, 8, 8, 16)]

    def forward(self, styles, input_is_latent=False, noise=None, randomize_noise=True):
        w = styles[0] if input_is_latent else self.style(styles[0])
        w = w[:, None].repeat(1, self.n_latent, 1) if w.ndim == 2 else w
        noise = noise or [n.expand(len(w), -1, -1, -1) for n in self.make_noise()]
        h = self.const.expand(len(w), -1, -1, -1)
        for i in range(4):
            if h.shape[-1] < noise[i].shape[-1]:
                h = nn.functional.interpolate(h, scale_factor=2)
            h = torch.relu(self.conv[i](h * (1 + self.affine[i](w[:, i])[:, :, None, None])) + 0.3 * noise[i])
        return torch.tanh(self.to_img(h)), None


def test_style_space_layer_mask_and_noise():
    torch.manual_seed(0)
    space = latent_space(TinyStyleGAN())
    assert isinstance(space, StyleSpace) and space.num_layers == 4 and space.noise
    det = Brightness(level_below_clean(space, 0.05), scale=20.0)
    res = LatentEvasion(steps=40, lr=0.1, reg_weight=0.01, layers="0-1").attack(space, [det], 8)
    c, c0 = res.codes, res.codes0
    assert torch.equal(c["w"][:, 2:], c0["w"][:, 2:]) and not torch.equal(c["w"][:, :2], c0["w"][:, :2])
    assert torch.equal(c["noise_3"], c0["noise_3"]) and not torch.equal(c["noise_0"], c0["noise_0"])
    assert res.success.float().mean() >= 0.75
    assert parse_layers("coarse", 18) == (0, 1, 2, 3) and parse_layers("middle", 18) == parse_layers("medium", 18)
    with pytest.raises(GuardgenError, match="out of range"):
        parse_layers("5", 4)
    with pytest.raises(GuardgenError, match="runs backwards; write 2-5"):
        parse_layers("5-2", 8)
    with pytest.raises(GuardgenError, match="selects no layer"):
        parse_layers("fine", 6)
    with pytest.raises(GuardgenError, match="single latent layer|out of range"):
        LatentEvasion(layers="1").attack(latent_space(tiny_gan()), [det], 2)


@pytest.mark.parametrize("mode, first_order", [("ensemble", False), ("meta", False), ("meta", True)])
def test_transfer_modes_attack_every_white_box_detector(mode, first_order):
    space = latent_space(tiny_gan())
    level = level_below_clean(space)
    dets = [Brightness(level, 40.0), Brightness(level - 0.01, 20.0), Brightness(level + 0.005, 60.0)]
    res = LatentEvasion(mode=mode, first_order=first_order, steps=30, lr=0.1, reg_weight=0.1, candidates=1).attack(space, dets, 6)
    assert res.success.shape == (6, 3) and res.success.all(1).float().mean() >= 0.75
    single = LatentEvasion(mode="single", steps=2).attack(space, dets, 2)
    assert single.success.shape == (2, 1)  # single mode attacks (and reports) the first detector only
    with pytest.raises(GuardgenError, match="meta mode needs at least 2"):
        LatentEvasion(mode="meta").attack(space, dets[:1], 2)


def test_detector_of_another_size_is_resized_and_noted():
    space = latent_space(tiny_gan())
    det = Brightness(level_below_clean(space), input_size=8)
    views, notes = detector_views([det], (1, 16, 16), ["small"])
    assert any("8x8" in n and "resized" in n for n in notes)
    res = LatentEvasion(steps=5, lr=0.1).attack(space, [det], 4, names=["small"])
    assert res.notes == notes and res.score_after.shape == (4, 1)


class Detached(nn.Module):
    latent_dim = 4

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 64)

    def forward(self, z):
        return self.lin(z).detach().view(-1, 1, 8, 8).tanh()


def test_bad_input_is_one_clear_error():
    with pytest.raises(GuardgenError, match="no differentiable latent path"):
        latent_space(Detached())
    with pytest.raises(GuardgenError, match="no differentiable latent path"):
        latent_space(nn.Linear(3, 3))
    with pytest.raises(GuardgenError, match="no differentiable latent path"):
        latent_space(object())
    names = [str(i) for i in range(10)]
    assert parse_attribute("digit 4", names) == 4 and parse_attribute("a 7", names) == 7 and parse_attribute("3", names) == 3
    with pytest.raises(GuardgenError, match="unknown attribute 'digit 12'"):
        parse_attribute("digit 12", names)
    with pytest.raises(GuardgenError, match="not both"):
        LatentEvasion().attack(tiny_gan(), [Brightness(0.5)], 2, classifier=LeftRight(), target=1, reference=torch.zeros(1, 16, 16))
    with pytest.raises(GuardgenError, match="mode='maml': must be one of single"):
        LatentEvasion(mode="maml").attack(tiny_gan(), [Brightness(0.5)], 2)


def test_omat_trains_against_latent_attacks():
    from detectors.omat import OMAT
    from guardgen.models.gan import sample_gan

    gan = tiny_gan()
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(16, 1, 16, 16, generator=g), sample_gan(gan, 16, generator_rng=g)
    runner = OMAT(detector={"backbone": "guardgen_digitnet", "model_args": {"width": 4}, "epochs": 1, "device": "cpu"},
                  latent_attack={"steps": 2, "candidates": 1}, pool_size=4, refresh_every=1, refresh_size=2, epochs=2)
    runner.fit(real, fake, gans=[gan])
    assert len(runner.pool_) == 6 and runner.pool_.shape[1:] == (1, 16, 16)
    assert [(log["stage"], log["source"]) for log in runner.attack_log_] == [("offline pool", "gan 0"), ("refresh 1", "gan 0")]
    with pytest.raises(GuardgenError, match="no diffusion latent"):
        OMAT().fit(real, fake)


def test_restarts_retry_only_the_failures():
    space = latent_space(tiny_gan())
    det = Brightness(level_below_clean(space, 0.5))  # about half the starts pass; short runs barely move them
    kw = dict(steps=4, lr=0.01, reg_weight=0.1, candidates=1, seed=0)
    one = LatentEvasion(restarts=0, **kw).attack(space, [det], 16)
    runs = []
    more = LatentEvasion(restarts=3, **kw).attack(space, [det], 16, callback=lambda step, logs: runs.append(logs["run"]))
    assert runs[0] == 1 and max(runs) > 1  # the progress logs say which run (first, then restarts)
    ok = one.success[:, 0]
    assert 0.1 < ok.float().mean() < 0.9 and (one.steps_used == 4).all()  # this budget leaves failures to retry
    assert torch.equal(more.codes0["z"][ok], one.codes0["z"][ok]) and torch.equal(more.images[ok], one.images[ok])
    assert (more.steps_used[ok] == 4).all() and (more.steps_used[~ok] > 4).all()
    assert (more.kept_step[~ok & more.success[:, 0]] > 4).all()  # a replaced record counts the earlier runs
    assert more.success.float().mean() > ok.float().mean()
    assert not torch.equal(more.codes0["z"][~ok & more.success[:, 0]], one.codes0["z"][~ok & more.success[:, 0]])
