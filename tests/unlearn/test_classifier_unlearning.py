import pytest
import torch
import torch.nn.functional as F

from guardgen.errors import GuardgenError
from guardgen.models.classifier import create_classifier
from unlearn import UNLEARN
from unlearn.classifier import FT, RL, GAClassifier, L1Sparse, RetrainClassifier, SalUn

NAMES = ("retrain_classifier", "ft", "ga_classifier", "rl", "l1_sparse", "salun")


def planted(n_per_class=30, classes=4, seed=0):
    """Class templates plus noise, 8x8 gray in [0, 1]: separable but not trivially."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, 8, 8, generator=g)
    y = torch.arange(classes).repeat_interleave(n_per_class)
    x = (0.6 * templates[y] + 0.4 * torch.rand(len(y), 1, 8, 8, generator=g)).clamp(0, 1)
    return x, y


@pytest.fixture(scope="module")
def setup():
    x, y = planted()
    net = create_classifier("guardgen_digitnet", num_classes=4, in_chans=1, width=8)
    original = RetrainClassifier(epochs=10, lr=1e-2, batch_size=32, augment=False, device="cpu").fit(
        net, forget=(x[:0], y[:0]), retain=(x, y)).model_
    forget = torch.arange(0, 120, 12)  # 10 samples over all classes
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[forget] = False
    return original, (x[forget], y[forget]), (x[keep], y[keep])


def ce(model, data):
    with torch.no_grad():
        return F.cross_entropy(model.eval()(data[0]), data[1]).item()


def accuracy(model, data):
    with torch.no_grad():
        return (model.eval()(data[0]).argmax(-1) == data[1]).float().mean().item()


def test_the_registry_holds_every_classifier_method_beside_the_diffusion_ones():
    assert set(NAMES) | {"sfd", "esd", "ga", "retrain"} <= set(UNLEARN.names())


@pytest.mark.parametrize("name", NAMES)
def test_every_method_fits_a_copy_and_leaves_the_input_alone(setup, name):
    original, forget, retain = setup
    before = {k: v.clone() for k, v in original.state_dict().items()}
    m = UNLEARN.create(name, epochs=1, batch_size=32, device="cpu").fit(original, forget=forget, retain=retain)
    assert m.model_ is not original and m.train_seconds_ > 0 and m.history_
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in m.model_.state_dict().items())


def test_same_seed_same_result(setup):
    original, forget, retain = setup
    a = RL(epochs=1, batch_size=32, device="cpu", seed=3).fit(original, forget=forget, retain=retain).model_
    b = RL(epochs=1, batch_size=32, device="cpu", seed=3).fit(original, forget=forget, retain=retain).model_
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_ga_raises_the_forget_loss_and_ft_keeps_retain_accuracy(setup):
    original, forget, retain = setup
    ga = GAClassifier(epochs=5, lr=0.1, batch_size=8, device="cpu").fit(original, forget=forget, retain=retain)
    assert ce(ga.model_, forget) > 2 * ce(original, forget) + 0.05
    assert ga.history_[-1]["loss_forget"] > ga.history_[0]["loss_forget"]
    ft = FT(epochs=2, batch_size=32, device="cpu").fit(original, forget=forget, retain=retain)
    assert accuracy(ft.model_, retain) >= accuracy(original, retain) - 0.05


def test_rl_trains_the_forget_data_toward_wrong_labels():
    logits = torch.nn.functional.one_hot(torch.arange(4), 4).float() * 10
    labels = torch.arange(4)
    rl = RL()
    g = torch.Generator().manual_seed(0)
    assert (rl.per_sample_loss(logits, labels, torch.zeros(4), g) < 1e-3).all()  # retained: true labels
    assert (rl.per_sample_loss(logits, labels, torch.ones(4), g) > 9).all()  # forgotten: a wrong label


def test_salun_mask_has_the_requested_share_and_only_masked_weights_change(setup):
    original, forget, retain = setup
    s = SalUn(epochs=1, batch_size=32, threshold=0.3, device="cpu").fit(original, forget=forget, retain=retain)
    total = sum(p.numel() for p in original.parameters())
    assert sum(int(m.sum()) for m in s.mask_.values()) == round(0.3 * total)
    before, after = dict(original.named_parameters()), dict(s.model_.named_parameters())
    changed_outside = sum(int((before[n] != after[n])[~m].sum()) for n, m in s.mask_.items())
    changed_inside = sum(int((before[n] != after[n])[m].sum()) for n, m in s.mask_.items())
    assert changed_outside == 0 and changed_inside > 0
    with pytest.raises(GuardgenError, match="threshold"):
        SalUn(threshold=0.0, device="cpu").fit(original, forget=forget, retain=retain)


def test_l1_sparse_shrinks_the_weights_more_than_ft(setup):
    original, forget, retain = setup
    kw = dict(epochs=2, batch_size=32, device="cpu", seed=1)
    ft = FT(**kw).fit(original, forget=forget, retain=retain).model_
    l1 = L1Sparse(alpha=1e-3, **kw).fit(original, forget=forget, retain=retain).model_
    norm = lambda m: sum(p.abs().sum().item() for p in m.parameters())  # noqa: E731
    assert norm(l1) < norm(ft)


def test_retrain_starts_over_and_never_sees_the_forget_data():
    x, y = planted()
    net = create_classifier("guardgen_digitnet", num_classes=4, in_chans=1, width=8)
    forget = y == 3  # a whole class: a model that never saw it cannot predict it
    r = RetrainClassifier(epochs=10, lr=1e-2, batch_size=32, augment=False, device="cpu").fit(net, forget=(x[forget], y[forget]), retain=(x[~forget], y[~forget]))
    assert accuracy(r.model_, (x[forget], y[forget])) == 0.0
    assert accuracy(r.model_, (x[~forget], y[~forget])) > 0.8


@pytest.mark.parametrize("arch", ["test_resnet", "test_vit"])
def test_works_on_timm_models(arch):
    import timm

    x, y = planted(n_per_class=4, classes=10)
    kw = {"img_size": 8, "patch_size": 4} if "vit" in arch else {}
    net = timm.create_model(arch, num_classes=10, in_chans=1, **kw)
    for cls in (FT, SalUn) if "vit" in arch else (FT,):
        m = cls(epochs=1, batch_size=20, device="cpu").fit(net, forget=(x[:5], y[:5]), retain=(x[5:], y[5:]))
        assert m.model_(x[:2]).shape == (2, 10)


def test_bad_input_is_a_one_line_error(setup):
    original, forget, retain = setup
    with pytest.raises(GuardgenError, match="forget set is empty"):
        GAClassifier(device="cpu").fit(original, forget=(forget[0][:0], forget[1][:0]), retain=retain)
    with pytest.raises(GuardgenError, match="labels"):
        FT(device="cpu").fit(original, forget=forget, retain=(retain[0], retain[1][:3]))


def test_save_pretrained_round_trips_through_load_model(setup, tmp_path):
    from guardgen.models import load_model

    original, forget, retain = setup
    m = SalUn(epochs=1, batch_size=32, device="cpu")
    with pytest.raises(GuardgenError, match="fit the method"):
        m.save_pretrained(tmp_path / "x", architecture="guardgen_digitnet", model_args={})
    m.fit(original, forget=forget, retain=retain)
    args = {"num_classes": 4, "in_chans": 1, "width": 8}
    m.save_pretrained(tmp_path / "salun", architecture="guardgen_digitnet", model_args=args)
    loaded = load_model(str(tmp_path / "salun"), kind="classifier")
    with torch.no_grad():
        assert torch.allclose(loaded(forget[0]), m.model_.eval()(forget[0]))
    config = (tmp_path / "salun" / "config.json").read_text()
    assert '"method": "salun"' in config and '"forget": 10' in config and '"threshold": 0.5' in config
