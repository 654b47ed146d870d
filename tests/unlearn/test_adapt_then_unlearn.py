"""Adapt-then-Unlearn and the GAN fine-tune baseline: hand-checked pieces, behaviour on a planted feature, bad input."""

import math

import pytest
import torch
from torch import nn

from guardgen.errors import GuardgenError
from unlearn import UNLEARN
from unlearn.adapt_then_unlearn import (AdaptThenUnlearn, GANFineTune, _sample, diagonal_fisher, ewc_penalty,
                                        parameter_distance, repulsion_loss, split_by_feature)


class TinyG(nn.Module):
    """A user's own generator (not a zoo architecture): z (B, 8) -> (B, 1, 4, 4) in [-1, 1]."""

    latent_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.Tanh())

    def forward(self, z):
        return self.net(z).view(-1, 1, 4, 4)


class TinyD(nn.Module):
    def __init__(self, pixels=16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(pixels, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x)


def bright_corner(x01):
    """The planted feature: a bright top-left pixel (one logit per image, >= 0 means present)."""
    return x01[:, 0, 0, 0] - 0.5


def share(gen):
    return split_by_feature((_sample(gen, 2000, 8, seed=99) + 1) / 2, bright_corner, None).float().mean().item()


@pytest.fixture(autouse=True)
def _one_thread():
    """These toys are tiny: one thread avoids thread contention on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gan():
    torch.manual_seed(0)
    return TinyG(), TinyD()


def test_registered():
    assert UNLEARN.get("adapt_then_unlearn") is AdaptThenUnlearn
    assert UNLEARN.get("gan_finetune") is GANFineTune


@pytest.mark.parametrize("form", ["inverse", "negative", "exponential"])
def test_repulsion_value_and_gradient_match_hand_computation(form):
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        lin.bias.copy_(torch.tensor([0.5]))
    anchor = {"weight": torch.tensor([[0.0, 0.0]]), "bias": torch.tensor([0.0])}
    scale, gamma = 10.0, 0.3
    d = parameter_distance(lin, [anchor], scale)
    # by hand: weight MSE = (1 + 4) / 2 = 2.5, bias MSE = 0.25; d = 10 * 2.75
    assert d.item() == pytest.approx(27.5)
    value = repulsion_loss(d, form, gamma, exp_scale=100.0)
    expected = {"inverse": gamma / 27.5, "negative": -gamma * 27.5, "exponential": 100 * math.exp(-gamma * 27.5)}[form]
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    # d d / d w_0 = scale * 2 * (w_0 - 0) / 2 = 10; outer derivative by form
    outer = {"inverse": -gamma / 27.5 ** 2, "negative": -gamma, "exponential": -100 * gamma * math.exp(-gamma * 27.5)}[form]
    assert lin.weight.grad[0, 0].item() == pytest.approx(outer * 10.0, rel=1e-5)
    assert lin.bias.grad[0].item() == pytest.approx(outer * scale * 2 * 0.5, rel=1e-5)


def test_distance_averages_over_several_anchors():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    d = parameter_distance(lin, [{"weight": torch.zeros(1, 1)}, {"weight": torch.full((1, 1), 3.0)}])
    assert d.item() == pytest.approx((1 + 4) / 2)


def test_ewc_penalty_and_fisher(gan):
    g, d = gan
    fisher = diagonal_fisher(g, d, 8, samples=8, chunk=4)
    assert set(fisher) == {n for n, _ in g.named_parameters()}
    assert torch.cat([f.flatten() for f in fisher.values()]).mean().item() == pytest.approx(1.0, rel=1e-5)
    anchor = {n: p.detach().clone() for n, p in g.named_parameters()}
    assert ewc_penalty(g, fisher, anchor, 5.0).item() == 0.0
    with torch.no_grad():
        g.net[0].bias[0] += 2.0
    expected = 0.5 * 5.0 * fisher["net.0.bias"][0] * 4.0
    assert ewc_penalty(g, fisher, anchor, 5.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_split_by_feature_reads_logits_and_scores():
    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.eye(3)[x[:, 0, 0, 0].long()] + self.p

    x = torch.tensor([0, 1, 2, 1.0]).view(4, 1, 1, 1)
    assert split_by_feature(x, Fixed(), 1).tolist() == [False, True, False, True]
    assert split_by_feature(x, Fixed(), [0, 2]).tolist() == [True, False, True, False]
    assert split_by_feature(x, lambda im: im.flatten() >= 1, None).tolist() == [False, True, True, True]
    # softmax of a one-hot logit row: 0.576 on its class, 0.212 on each other one
    assert split_by_feature(x, Fixed(), 1, min_prob=0.2).tolist() == [True, True, True, True]
    assert split_by_feature(x, Fixed(), 1, min_prob=0.3).tolist() == [False, True, False, True]
    assert split_by_feature(x, Fixed(), [0, 2], min_prob=0.4).tolist() == [True, True, True, True]  # 0.212 + 0.212
    with pytest.raises(GuardgenError, match="outside"):
        split_by_feature(x, Fixed(), 5)


@pytest.mark.parametrize("method", ["adapt_then_unlearn", "gan_finetune"])
def test_unlearning_lowers_the_share_of_the_planted_feature(gan, method):
    g, d = gan
    before = share(g)
    assert 0.3 < before < 0.7
    kw = dict(num_samples=800, unlearn_iterations=100, batch_size=32, lr_g=2e-3, lr_d=2e-3, device="cpu")
    if method == "adapt_then_unlearn":  # on this toy a strong NL2 repulsion runs away (Adam)
        kw.update(adapt_iterations=40, ewc_lambda=0.01, repulsion="negative", gamma=1e-4)
    m = UNLEARN.get(method)(**kw).fit((g, d), classifier=bright_corner)
    assert m.share_before_ == pytest.approx(before, abs=0.06)
    assert share(m.generator_) < 0.25 * before
    assert share(g) == before  # the original is untouched
    if method == "adapt_then_unlearn":
        assert m.final_distance_ > m.initial_distance_  # repelled from the adapted weights
        assert {h["stage"] for h in m.history_} == {"adapt", "unlearn"}


def test_stage_one_adapts_towards_the_feature(gan):
    g, d = gan
    m = AdaptThenUnlearn(num_samples=800, adapt_iterations=60, unlearn_iterations=1, batch_size=32, lr_g=2e-3, lr_d=2e-3,
                         ewc_lambda=0.01, device="cpu").fit((g, d), classifier=bright_corner)
    assert share(m.adapted_) > share(g) + 0.2


def test_feature_never_found_is_refused(gan):
    with pytest.raises(GuardgenError, match="finds the feature to forget .* in 0 of"):
        AdaptThenUnlearn(num_samples=100, device="cpu").fit(gan, classifier=lambda x: torch.full((len(x),), -1.0))


def test_mismatched_pair_is_refused():
    torch.manual_seed(0)
    with pytest.raises(GuardgenError, match="generator/discriminator mismatch"):
        AdaptThenUnlearn(device="cpu").fit((TinyG(), TinyD(pixels=25)), classifier=bright_corner)
    with pytest.raises(GuardgenError, match="needs the GAN's discriminator"):
        GANFineTune(device="cpu").fit((TinyG(), None), classifier=bright_corner)
    with pytest.raises(GuardgenError, match="repulsion='cubic': must be one of inverse"):
        AdaptThenUnlearn(repulsion="cubic", device="cpu").fit((TinyG(), TinyD()), classifier=bright_corner)
    with pytest.raises(GuardgenError, match="feature_min_prob"):
        GANFineTune(feature_min_prob=1.5, device="cpu").fit((TinyG(), TinyD()), classifier=bright_corner)


def test_zoo_architecture_saves_as_a_gan_folder(tmp_path):
    from guardgen.checkpoint import load_json
    from guardgen.models import load_model, resolve
    from guardgen.models.gan import GAN_ARCHITECTURES

    torch.manual_seed(0)
    arch = GAN_ARCHITECTURES.get("dcgan")
    g, d = arch.generator(latent_dim=8, width=4), arch.discriminator(width=4)
    dark = lambda x: x.mean(dim=(1, 2, 3)) - x.mean()  # noqa: E731 - brighter than the batch's mean
    m = GANFineTune(num_samples=64, unlearn_iterations=2, batch_size=8, device="cpu").fit((g, d), classifier=dark)
    m.save_pretrained(tmp_path / "out")
    assert resolve(str(tmp_path / "out")).kind == "gan"
    g2, d2 = load_model(str(tmp_path / "out"), kind="gan")
    z = torch.randn(3, 8)
    assert torch.allclose(m.generator_.eval()(z), g2(z), atol=1e-6)
    meta = load_json(tmp_path / "out" / "config.json")["unlearning"]
    assert meta["method"] == "gan_finetune" and meta["negatives"] + meta["positives"] == 64


def test_user_modules_save_and_reload(tmp_path, gan):
    from unlearn.adapt_then_unlearn import load_unlearned_gan

    m = GANFineTune(num_samples=64, unlearn_iterations=2, batch_size=8, device="cpu").fit(gan, classifier=bright_corner)
    m.save_pretrained(tmp_path / "mine")
    g2 = TinyG()
    config = load_unlearned_gan(tmp_path / "mine", g2)
    assert config["generator_class"].endswith("TinyG")
    z = torch.randn(2, 8)
    assert torch.equal(m.generator_(z), g2(z))


@pytest.mark.parametrize("method,stop", [("adapt_then_unlearn", 5), ("adapt_then_unlearn", 13), ("gan_finetune", 5)])
def test_an_interrupted_gan_unlearning_resumes_exactly(gan, tmp_path, method, stop, stop_at):
    """Stopped in stage 1 (step 5) or stage 2 (step 13; stage 1 ended at 8), then resumed: the steps after the last
    saved state only (stage 1 is not run again), and the generator of an uninterrupted run."""
    g, d = gan
    kw = dict(num_samples=200, unlearn_iterations=8, batch_size=16, checkpoint_every=2, device="cpu")
    if method == "adapt_then_unlearn":
        kw.update(adapt_iterations=8, ewc_lambda=0.01, repulsion="negative", gamma=1e-4)
    ref = UNLEARN.get(method)(**kw).fit((g, d), classifier=bright_corner)

    with pytest.raises(stop_at.error):
        UNLEARN.get(method)(**kw).fit((g, d), classifier=bright_corner, callback=stop_at(stop), out=tmp_path)
    steps = []
    run = UNLEARN.get(method)(**kw).fit((g, d), classifier=bright_corner, out=tmp_path, resume=True,
                                        callback=lambda step, logs: steps.append(step))
    assert steps[0] == stop and steps[-1] == len(ref.history_)  # the last state was saved after step stop - 1
    assert [h["step"] for h in run.history_] == [h["step"] for h in ref.history_]
    for a, b in zip(ref.generator_.state_dict().values(), run.generator_.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not (tmp_path / "training_state").exists()
