import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attacks import ATTACKS
from attacks.worst_case_forget import WorstCaseForget, project_capped_simplex
from guardgen.errors import GuardgenError


def ft_form(logits, labels, w, generator=None):  # the per-sample form of fine-tuning on the retained data
    return (1 - w) * F.cross_entropy(logits, labels, reduction="none")


class GAForm:  # an object with the interface of guardgen's classifier methods (gradient ascent)
    def per_sample_loss(self, logits, labels, w, generator=None):
        return -w * F.cross_entropy(logits, labels, reduction="none")


def planted_points():
    """2-D, two classes split by x0 = 0. 8 prototypical points deep in their class (hard to forget: the model
    keeps fitting them), 24 typical ones, 8 atypical ones on the wrong side (easy to forget)."""
    g = torch.Generator().manual_seed(0)
    side = lambda n: torch.arange(n) % 2  # noqa: E731
    groups = {"proto": (8, 5.0), "typical": (24, 1.5), "atypical": (8, -0.5)}
    xs, ys, tags = [], [], []
    for tag, (n, r) in groups.items():
        y = side(n)
        x0 = (2 * y - 1) * r + 0.1 * torch.randn(n, generator=g)
        xs.append(torch.stack([x0, torch.randn(n, generator=g)], 1))
        ys.append(y)
        tags += [tag] * n
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        model.bias.zero_()
    return model, torch.cat(xs), torch.cat(ys), np.array(tags)


@pytest.mark.parametrize("a,m", [([0.3, 2.0, -1.0, 0.5, 0.1, 0.9], 2), ([5.0, 5.0, 5.0, -5.0], 3), (list(np.random.default_rng(0).normal(size=12)), 4.5)])
def test_capped_simplex_projection_is_feasible_and_optimal(a, m):
    from scipy.optimize import minimize

    w = project_capped_simplex(a, m).numpy()
    assert w.min() >= 0 and w.max() <= 1 and w.sum() == pytest.approx(m, abs=1e-9)
    a = np.asarray(a, dtype=float)
    ref = minimize(lambda v: ((v - a) ** 2).sum(), np.full(len(a), m / len(a)), jac=lambda v: 2 * (v - a),
                   bounds=[(0, 1)] * len(a), constraints=[{"type": "eq", "fun": lambda v: v.sum() - m}], method="SLSQP",
                   options={"ftol": 1e-12, "maxiter": 500}).x
    np.testing.assert_allclose(w, ref, atol=1e-5)
    with pytest.raises(GuardgenError):
        project_capped_simplex(a, len(a) + 1)


def test_registered_as_an_attack():
    assert ATTACKS.get("worst_case_forget") is WorstCaseForget


@pytest.mark.parametrize("method", [ft_form, GAForm()])
def test_data_wise_search_picks_the_planted_hard_to_forget_points_and_reverse_the_easy_ones(method):
    model, x, y, tags = planted_points()
    kw = dict(size=8, iterations=5, inner_steps=2, batch_size=16, w_lr=0.05, device="cpu")
    hard = WorstCaseForget(**kw).fit(model, (x, y), method=method)
    easy = WorstCaseForget(reverse=True, **kw).fit(model, (x, y), method=method)
    assert set(tags[hard.indices_.numpy()]) == {"proto"}
    assert set(tags[easy.indices_.numpy()]) == {"atypical"}
    for r in (hard, easy):
        assert len(set(r.indices_.tolist())) == 8 and len(r.history_) == 5
        assert 0 <= float(r.weights_.min()) and float(r.weights_.max()) <= 1 and float(r.weights_.sum()) == pytest.approx(8, abs=1e-4)
    assert torch.equal(model.weight, torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))  # the input model is untouched


def test_class_wise_search_picks_the_best_fitted_class():
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.2, 2.0, 0.5, 0.8])  # class 1 is the best separated: hardest to forget
    y = torch.arange(4).repeat(10)
    x = F.one_hot(y, 4).float() * scale[y, None] + 0.05 * torch.randn(40, 4, generator=g)
    model = nn.Linear(4, 4)
    with torch.no_grad():
        model.weight.copy_(5 * torch.eye(4))
        model.bias.zero_()
    kw = dict(size=1, mode="class", iterations=3, inner_steps=1, batch_size=16, w_lr=0.1, device="cpu")
    hard = WorstCaseForget(**kw).fit(model, (x, y), method=ft_form)
    easy = WorstCaseForget(reverse=True, **kw).fit(model, (x, y), method=ft_form)
    assert hard.indices_.tolist() == [1] and easy.indices_.tolist() == [0]
    assert torch.equal(hard.sample_indices_, torch.nonzero(y == 1).flatten())


def test_gap_signal_picks_the_samples_furthest_from_the_reference_and_reverse_the_closest():
    model, x, y, tags = planted_points()
    kw = dict(size=8, iterations=3, inner_steps=0, batch_size=16, w_lr=0.05, upper_signal="gap", device="cpu")
    fitted = F.cross_entropy(model(x), y, reduction="none").detach()  # inner_steps=0: the unlearned model is the original
    ref = fitted.clone()
    memorised = torch.arange(8, 40, 4)  # 8 typical/atypical samples a model that never saw them would get wrong
    ref[memorised] += 3.0
    ref[tags == "proto"] += 0.5  # a smaller departure: not the worst case
    hard = WorstCaseForget(**kw).fit(model, (x, y), method=ft_form, reference=ref)
    assert hard.indices_.tolist() == memorised.tolist()
    assert torch.equal(hard.reference_losses_, ref)
    assert torch.allclose(hard.sample_signal_, -(hard.losses_ - ref).abs())
    easy = WorstCaseForget(reverse=True, **kw).fit(model, (x, y), method=ft_form, reference=ref)
    assert set(easy.indices_.tolist()).isdisjoint(memorised.tolist())
    assert set(tags[easy.indices_.numpy()]) <= {"typical", "atypical"}


class RecordingTrainer:
    """A from-scratch trainer (the interface of guardgen's retrain_classifier): fits a linear model to the retained data."""

    def __init__(self):
        self.held_out, self.held_labels = [], []

    def fit(self, model, *, forget, retain):
        self.held_out.append(forget[0].clone())
        self.held_labels.append(forget[1].clone())
        net = nn.Linear(2, 2)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for _ in range(50):
            opt.zero_grad()
            F.cross_entropy(net(retain[0]), retain[1]).backward()
            opt.step()
        self.model_ = net
        return self


def test_gap_signal_trains_one_reference_per_fold_on_the_other_folds():
    model, x, y, _ = planted_points()
    trainer = RecordingTrainer()
    r = WorstCaseForget(size=8, iterations=2, inner_steps=1, batch_size=16, upper_signal="gap", reference_folds=3,
                        device="cpu").fit(model, (x, y), method=ft_form, reference=trainer)
    assert len(trainer.held_out) == 3
    held = torch.cat(trainer.held_out)
    assert len(held) == len(x) and len(torch.unique(held, dim=0)) == len(x)  # every sample held out exactly once
    assert r.reference_losses_.shape == (len(x),) and torch.isfinite(r.reference_losses_).all()
    assert len(set(r.indices_.tolist())) == 8
    trainer = RecordingTrainer()
    WorstCaseForget(size=1, mode="class", iterations=1, inner_steps=1, batch_size=16, upper_signal="gap",
                    device="cpu").fit(model, (x, y), method=ft_form, reference=trainer)
    assert len(trainer.held_out) == 2  # class mode: each fold holds out one whole class (two classes, two folds)
    for labels in trainer.held_labels:
        assert len(set(labels.tolist())) == 1 and len(labels) == int((y == labels[0]).sum())


@pytest.mark.parametrize("kw,reference,message", [
    (dict(upper_signal="ratio"), None, "'loss' or 'gap'"),
    (dict(upper_signal="gap"), None, "needs reference="),
    (dict(upper_signal="gap"), torch.zeros(5), "40 finite values"),
    (dict(upper_signal="gap", reference_folds=1), RecordingTrainer(), "reference_folds must be between 2 and 40"),
])
def test_bad_gap_settings_are_one_line_errors(kw, reference, message):
    model, x, y, _ = planted_points()
    with pytest.raises(GuardgenError, match=message):
        WorstCaseForget(size=2, device="cpu", **kw).fit(model, (x, y), method=ft_form, reference=reference)


def test_masked_lower_level_only_moves_masked_weights():
    model, x, y, _ = planted_points()
    seen = {}

    class Masked:
        def per_sample_loss(self, logits, labels, w, generator=None):
            return (1 - w) * F.cross_entropy(logits, labels, reduction="none")

        def lower_level_mask(self, net, images, labels, w):
            seen["w"] = w.clone()
            return {"weight": torch.zeros(2, 2, dtype=torch.bool), "bias": torch.ones(2, dtype=torch.bool)}

    r = WorstCaseForget(size=4, iterations=1, inner_steps=2, device="cpu").fit(model, (x, y), method=Masked())
    assert seen["w"].sum().item() == pytest.approx(4, abs=1e-5) and len(r.indices_) == 4


def test_diffusion_class_wise_selection_follows_the_denoising_loss(tiny_class_pipeline):
    from guardgen.models.diffusion import load_diffusion

    pipe = load_diffusion(tiny_class_pipeline)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(3)
    images = torch.rand(30, 1, 8, 8, generator=g)
    ga = lambda mse, w: -w * mse + (1 - w) * mse  # noqa: E731  (gradient ascent's per-sample form)
    kw = dict(size=2, mode="class", iterations=1, inner_steps=1, batch_size=16, eval_per_class=3, w_lr=1.0, theta_lr=1e-4, device="cpu")
    hard = WorstCaseForget(**kw).fit_diffusion(pipe, (images, labels), method=ga)
    easy = WorstCaseForget(reverse=True, **kw).fit_diffusion(pipe, (images, labels), method=ga)
    order = torch.argsort(hard.losses_)
    assert sorted(hard.indices_) == sorted(order[:2].tolist())
    assert sorted(easy.indices_) == sorted(torch.argsort(easy.losses_)[-2:].tolist())
    assert float(hard.weights_.sum()) == pytest.approx(2, abs=1e-4) and hard.conditions_ == list(range(10))
    ratio = WorstCaseForget(upper_signal="ratio", **kw).fit_diffusion(pipe, (images, labels), method=ga)
    assert sorted(ratio.indices_) == sorted(torch.argsort(ratio.losses_)[:2].tolist())
    assert float(ratio.losses_.min()) > 0.5 and float(ratio.losses_.max()) < 2  # loss after / loss before: near 1
    with pytest.raises(GuardgenError, match="upper_signal"):
        WorstCaseForget(upper_signal="bogus", **kw).fit_diffusion(pipe, (images, labels), method=ga)
    with pytest.raises(GuardgenError, match="mode='class'"):
        WorstCaseForget(size=2).fit_diffusion(pipe, (images, labels), method=ga)


@pytest.mark.parametrize("kw,message", [
    (dict(size=41), "between 1 and 39"),
    (dict(size=0), "between 1 and 39"),
    (dict(size=3, mode="prompt"), "mode='prompt': must be one of data, class"),
    (dict(size=2, mode="class"), "between 1 and 1"),
])
def test_bad_settings_are_one_line_errors(kw, message):
    model, x, y, _ = planted_points()
    with pytest.raises(GuardgenError, match=message):
        WorstCaseForget(device="cpu", **kw).fit(model, (x, y), method=ft_form)
    with pytest.raises(GuardgenError, match="per_sample_loss"):
        WorstCaseForget(size=2, device="cpu").fit(model, (x, y), method=object())


def test_an_interrupted_gap_search_resumes_without_training_the_references_again(tmp_path, stop_at):
    """Cut short at upper step 3 of 4: --resume keeps the reference losses and the steps done, and ends where an
    uninterrupted search ends; a state for other settings or other data is refused in one line."""
    model, x, y, _ = planted_points()
    kw = dict(size=8, iterations=4, inner_steps=2, batch_size=16, w_lr=0.05, upper_signal="gap", reference_folds=2, device="cpu")
    ref = WorstCaseForget(**kw).fit(model, (x, y), method=ft_form, reference=RecordingTrainer())
    state = tmp_path / "search"
    with pytest.raises(stop_at.error):
        WorstCaseForget(**kw).fit(model, (x, y), method=ft_form, reference=RecordingTrainer(), state_dir=state, callback=stop_at(3))
    with pytest.raises(GuardgenError, match="used other settings \\(w_lr\\)"):
        WorstCaseForget(**{**kw, "w_lr": 0.1}).fit(model, (x, y), method=ft_form, reference=RecordingTrainer(), state_dir=state, resume=True)
    with pytest.raises(GuardgenError, match="this data has 39"):
        WorstCaseForget(**kw).fit(model, (x[:39], y[:39]), method=ft_form, reference=RecordingTrainer(), state_dir=state, resume=True)
    trainer, steps = RecordingTrainer(), []
    run = WorstCaseForget(**kw).fit(model, (x, y), method=ft_form, reference=trainer, state_dir=state, resume=True,
                                    callback=lambda it, logs: steps.append(it))
    assert steps == [3, 4] and trainer.held_out == []  # the references were not trained again
    assert run.history_ == ref.history_ and torch.equal(run.indices_, ref.indices_)
    assert torch.equal(run.weights_, ref.weights_) and torch.equal(run.reference_losses_, ref.reference_losses_)
    assert not state.exists()


def test_an_interrupted_diffusion_search_resumes(tiny_class_pipeline, tmp_path, stop_at):
    from guardgen.models.diffusion import load_diffusion

    pipe = load_diffusion(tiny_class_pipeline)
    labels = torch.arange(10).repeat(3)
    images = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ga = lambda mse, w: -w * mse + (1 - w) * mse  # noqa: E731
    kw = dict(size=2, mode="class", iterations=3, inner_steps=1, batch_size=16, eval_per_class=3, w_lr=1.0,
              upper_signal="ratio", device="cpu")
    ref = WorstCaseForget(**kw).fit_diffusion(pipe, (images, labels), method=ga)
    with pytest.raises(stop_at.error):
        WorstCaseForget(**kw).fit_diffusion(pipe, (images, labels), method=ga, state_dir=tmp_path / "s", callback=stop_at(2))
    run = WorstCaseForget(**kw).fit_diffusion(pipe, (images, labels), method=ga, state_dir=tmp_path / "s", resume=True)
    assert run.history_ == ref.history_ and run.indices_ == ref.indices_
    assert torch.allclose(run.losses_, ref.losses_)


def test_a_kept_search_reloads_into_a_fresh_object_for_the_same_task_only(tmp_path):
    model, x, y, _ = planted_points()
    kw = dict(size=8, iterations=3, inner_steps=2, device="cpu")
    search = WorstCaseForget(**kw).fit(model, (x, y), method=ft_form)
    search.save_result(tmp_path / "search")
    kept = WorstCaseForget(**kw).load_result(tmp_path / "search", len(y), model=model, method=ft_form)
    assert torch.equal(kept.sample_indices_, search.sample_indices_) and kept.history_ == search.history_
    with pytest.raises(GuardgenError, match=r"used other settings \(method\)"):
        WorstCaseForget(**kw).load_result(tmp_path / "search", len(y), model=model, method=GAForm())
    with pytest.raises(GuardgenError, match=r"used other settings \(size\)"):
        WorstCaseForget(**{**kw, "size": 6}).load_result(tmp_path / "search", len(y), model=model, method=ft_form)
