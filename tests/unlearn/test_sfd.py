import pytest
import torch

from guardgen.errors import GuardgenError
from guardgen.models import load_model
from guardgen.models.diffusion import load_diffusion, sample_images, save_pipeline
from guardgen.utils import predict_logits
from unlearn.sfd import SFD

RETAIN = [c for c in range(10) if c != 7]


@pytest.fixture(scope="module")
def zoo_models():
    return load_model("zoo:mnist-ddpm"), load_model("zoo:mnist-oracle")


def _rates(pipe, oracle, classes, n=40):
    labels = [c for c in classes for _ in range(n)]
    pred = predict_logits(oracle, sample_images(pipe, labels, seed=3)).argmax(1)
    return (pred == torch.tensor(labels)).float().mean().item()


def test_sfd_forgets_the_class_and_keeps_the_others(zoo_models):
    pipe, oracle = zoo_models
    start = SFD(iterations=0, device="cpu").fit(pipe, forget=[7], retain=RETAIN, override=[1]).to_pipeline(pipe)
    done = SFD(iterations=45, device="cpu").fit(pipe, forget=[7], retain=RETAIN, override=[1]).to_pipeline(pipe)
    assert _rates(start, oracle, [7]) > 0.3  # the undistilled one-step generator still draws 7s
    assert _rates(done, oracle, [7]) < 0.15
    assert _rates(done, oracle, [0, 3, 8]) > 0.85
    ones = predict_logits(oracle, sample_images(done, [7] * 40, seed=4)).argmax(1)
    assert (ones == 1).float().mean() > 0.7  # the forgotten class became the override


def _straight_and_resumed(pipe, kw: dict, out):
    """Two runs of SFD(**kw): one straight through, one interrupted at step 3 and resumed from ``out``."""
    straight = SFD(**kw).fit(pipe, forget=[7], retain=[1, 2], override=[1])

    def stop(step, logs):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SFD(**kw).fit(pipe, forget=[7], retain=[1, 2], override=[1], out=out, callback=stop)
    assert (out / "training_state" / "state.json").is_file()
    with pytest.raises(GuardgenError, match="used other settings \\(alpha\\)"):  # refused, the state kept
        SFD(**{**kw, "alpha": 0.5}).fit(pipe, forget=[7], retain=[1, 2], override=[1], out=out, resume=True)
    return straight, SFD(**kw).fit(pipe, forget=[7], retain=[1, 2], override=[1], out=out, resume=True)


def test_sfd_resume_continues_exactly(tmp_path, tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    # 16 iterations: the lr warm-up (16 // 4 = 4 iterations) is still rising when the run resumes at step 2
    kw = dict(iterations=16, batch_size=4, device="cpu", checkpoint_every=2, t_init=40, t_min=4, t_max=70)
    straight, resumed = _straight_and_resumed(pipe, kw, tmp_path)
    a, b = straight.generator_.state_dict(), resumed.generator_.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert len(resumed.history_) == 16 and not (tmp_path / "training_state").exists()
    online = resumed.to_pipeline(pipe, online=True).unet.state_dict()
    assert all(torch.allclose(straight.online_generator_.state_dict()[k], online[k], atol=1e-6) for k in online)
    assert not all(torch.equal(a[k], online[k]) for k in a)  # the EMA lags the raw generator


def test_sfd_without_ema_serves_the_online_generator(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    sfd = SFD(iterations=2, batch_size=4, device="cpu", t_init=40, t_min=4, t_max=70, ema_halflife=0)
    sfd.fit(pipe, forget=[7], retain=[1, 2], override=[1])
    assert sfd.generator_ is sfd.online_generator_
    assert sfd.to_pipeline(pipe).unet is sfd.to_pipeline(pipe, online=True).unet


def test_one_step_pipeline_round_trips_through_stock_diffusers(tmp_path, tiny_class_pipeline):
    from diffusers import DiffusionPipeline

    pipe = load_diffusion(tiny_class_pipeline)
    sfd = SFD(iterations=1, batch_size=4, device="cpu", t_init=40, t_min=4, t_max=70, override="random")
    one = sfd.fit(pipe, forget=[3], retain=[0, 1, 2]).to_pipeline(pipe)
    save_pipeline(one, tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    ours = load_model(str(tmp_path / "run"))(class_labels=[3, 4], generator=g).images
    stock = DiffusionPipeline.from_pretrained(tmp_path / "run", trust_remote_code=True)
    theirs = stock(class_labels=[3, 4], generator=torch.Generator().manual_seed(0)).images
    assert ours.shape == (2, 1, 8, 8) and torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(forget=[7], retain=[1], override=[7]), "override equals the forgotten"),
    (dict(forget=[12], retain=[1], override=[1]), "unknown class"),
    (dict(forget=[7], retain=[1]), "needs an override"),
])
def test_sfd_bad_input(tiny_class_pipeline, kwargs, match):
    with pytest.raises(GuardgenError, match=match):
        SFD(iterations=1, device="cpu").fit(load_diffusion(tiny_class_pipeline), **kwargs)


def test_sfd_oracle_override_needs_a_classifier(tiny_class_pipeline):
    with pytest.raises(GuardgenError, match="needs a classifier"):
        SFD(iterations=1, device="cpu", override="oracle").fit(load_diffusion(tiny_class_pipeline), forget=[7], retain=[1])


def test_sfd_oracle_override_picks_non_forgotten_classes(tiny_class_pipeline):
    from guardgen.models.classifier import create_classifier

    oracle = create_classifier("guardgen_digitnet", num_classes=10).eval()
    with torch.no_grad():
        oracle.head.bias.copy_(torch.arange(10.0) * 10)  # always prefers 9, then 8
    sfd = SFD(iterations=1, batch_size=4, device="cpu", override="oracle", t_init=40, t_min=4, t_max=70)
    seen = []
    original = SFD._teacher_conditions

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(out)
        return out

    SFD._teacher_conditions = spy
    try:
        sfd.fit(load_diffusion(tiny_class_pipeline), forget=[9], retain=[0, 1], oracle=oracle)
    finally:
        SFD._teacher_conditions = original
    assert seen and seen[0][-1] == 8  # 9 is masked out, so the oracle's pick is 8


def test_sfd_divergence_stops_with_a_clear_error(tiny_class_pipeline):
    with pytest.raises(FloatingPointError, match="diverged"):  # a learning rate far too high: the losses overflow
        SFD(iterations=2, batch_size=4, device="cpu", lr_fake=1e30, lr_generator=1e30, t_init=40, t_min=4, t_max=70).fit(
            load_diffusion(tiny_class_pipeline), forget=[7], retain=[1], override=[1])


def test_sfd_on_a_tiny_stable_diffusion_pipeline(tmp_path, tiny_sd_pipeline):
    from diffusers import DiffusionPipeline

    pipe = load_model(str(tiny_sd_pipeline))
    sfd = SFD(iterations=2, batch_size=2, device="cpu", t_init=625, t_min=20, t_max=980)
    sfd.fit(pipe, forget=["a photo of brad pitt"], retain=["a photo of a dog", "a painting"], override=["a middle aged man"])
    one = sfd.to_pipeline(pipe)
    assert one.vae is not None and one.text_encoder is not None
    save_pipeline(one, tmp_path / "run")
    loaded = load_model(str(tmp_path / "run"))
    img = loaded(prompt=["a photo of brad pitt"], generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 8, 8)
    stock = DiffusionPipeline.from_pretrained(tmp_path / "run", trust_remote_code=True)
    assert stock(prompt="a painting", generator=torch.Generator().manual_seed(0)).images.shape == (1, 3, 8, 8)


def test_sfd_fake_steps_take_more_fake_score_updates(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    runs = [SFD(iterations=1, batch_size=4, fake_steps=k, device="cpu").fit(pipe, forget=[7], retain=[1, 2], override=[1])
            for k in (1, 1, 2)]
    one, same, two = ([p.detach().clone() for p in r.fake_score_.parameters()] for r in runs)
    assert all(torch.equal(a, b) for a, b in zip(one, same))  # seeded: one fake step twice is the same update
    assert not all(torch.equal(a, b) for a, b in zip(one, two))
    with pytest.raises(GuardgenError, match="fake_steps"):
        SFD(iterations=1, fake_steps=0, device="cpu").fit(pipe, forget=[7], retain=[1], override=[1])


def test_sfd_warmup_scales_the_first_generator_steps(tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    start = [p.detach().clone() for p in pipe.unet.parameters()]

    def first_step(warmup):
        sfd = SFD(iterations=8, batch_size=4, device="cpu", t_init=40, t_min=4, t_max=70, warmup=warmup)
        moved = []

        def stop(step, logs):
            moved.append(sum((p - q).abs().sum() for p, q in zip(sfd.online_generator_.parameters(), start)).item())
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sfd.fit(pipe, forget=[7], retain=[1, 2], override=[1], callback=stop)
        return moved[0]

    # Adam's first step moves each weight by about lr; warm-up over 2 iterations (8 // 4) halves it
    assert first_step(8) == pytest.approx(0.5 * first_step(0), rel=0.05)
    assert first_step(100) == pytest.approx(first_step(8), rel=1e-6)  # capped at a quarter of the run
    with pytest.raises(GuardgenError, match="warmup"):
        SFD(iterations=1, warmup=-1, device="cpu").fit(pipe, forget=[7], retain=[1], override=[1])


def test_sfd_regression_pairs_are_the_teachers_ddim_samples_at_the_override(tiny_class_pipeline):
    from attacks.on_manifold import latent_sampler
    from guardgen.models.conditioning import conditioning_for
    from guardgen.utils import make_accelerator

    pipe = load_diffusion(tiny_class_pipeline)
    sfd = SFD(regression_pairs=8, regression_steps=4, forget_share=0.25, device="cpu")
    pairs = sfd._regression_pairs(pipe.unet, pipe, conditioning_for(pipe), (1, 8, 8), [1, 2], [7], [3], None,
                                  make_accelerator("cpu", "no"))
    assert pairs["conditions"][-2:] == [7, 7] and pairs["is_forget"] == [False] * 6 + [True] * 2
    assert set(pairs["conditions"][:6]) <= {1, 2}
    # an independent DDIM (the on-manifold attack's sampler): retained pairs at their class, forgotten at the override
    _, decode = latent_sampler(pipe, 4, checkpointing=False)
    with torch.no_grad():
        ref = decode(pairs["z"], pairs["conditions"][:6] + [3, 3])
        forgotten = decode(pairs["z"][-2:], [7, 7])
    ours = ((pairs["y"] + 1) / 2).clamp(0, 1)
    assert torch.allclose(ours, ref, atol=1e-4)
    assert not torch.allclose(ours[-2:], forgotten, atol=1e-2)


def test_sfd_regression_pulls_the_generator_onto_the_teachers_map(tiny_class_pipeline):
    from guardgen.models.conditioning import conditioning_for
    from guardgen.utils import make_accelerator

    pipe = load_diffusion(tiny_class_pipeline)
    kw = dict(iterations=20, batch_size=4, device="cpu", t_init=40, t_min=4, t_max=70, ema_halflife=0, warmup=0,
              lr_generator=3e-3, regression_pairs=4, regression_retain_batch=3, regression_forget_batch=1, regression_steps=3)
    # the pairs are a function of the seed: these are the ones a run with the regression on trains against
    pairs = SFD(lambda_regression=1.0, **kw)._regression_pairs(pipe.unet, pipe, conditioning_for(pipe), (1, 8, 8), [1, 2],
                                                               [7], [1], None, make_accelerator("cpu", "no"))

    def pair_error(lam):
        sfd = SFD(lambda_regression=lam, **kw).fit(pipe, forget=[7], retain=[1, 2], override=[1])
        a = pipe.scheduler.alphas_cumprod[sfd.t_init_]  # t_init on the tiny model's 100-step schedule
        with torch.no_grad():
            eps = sfd.generator_((1 - a).sqrt() * pairs["z"], torch.full((4,), sfd.t_init_),
                                 class_labels=torch.tensor(pairs["conditions"])).sample
        x_g = pairs["z"] * ((1 - a) / a).sqrt() - (1 / a - 1).sqrt() * eps  # the one-step generator's output
        return (x_g - pairs["y"]).pow(2).mean().item()

    assert pair_error(30.0) < 0.9 * pair_error(0.0)  # measured: 0.41 against 0.50


def test_sfd_regression_resumes_exactly(tmp_path, tiny_class_pipeline):
    pipe = load_diffusion(tiny_class_pipeline)
    kw = dict(iterations=6, batch_size=4, device="cpu", checkpoint_every=2, t_init=40, t_min=4, t_max=70, lambda_regression=1.0,
              regression_pairs=6, regression_retain_batch=2, regression_forget_batch=1, regression_steps=2)
    straight, resumed = _straight_and_resumed(pipe, kw, tmp_path)
    a, b = straight.generator_.state_dict(), resumed.generator_.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    plain = SFD(**{**kw, "lambda_regression": 0.0}).fit(pipe, forget=[7], retain=[1, 2], override=[1])
    assert not all(torch.allclose(a[k], plain.generator_.state_dict()[k], atol=1e-6) for k in a)
    with pytest.raises(GuardgenError, match="regression_pairs"):
        SFD(iterations=1, lambda_regression=1.0, regression_pairs=1, device="cpu").fit(pipe, forget=[7], retain=[1], override=[1])


def test_sfd_forget_negative_asks_the_teacher_for_the_concept_on_forgotten_rows(tiny_class_pipeline):
    """eps(c_o) + w (eps(c_o) - eps(c_f)) on forgotten rows: with w > 0 the teacher is also run at the concept there."""
    pipe = load_diffusion(tiny_class_pipeline)
    kw = dict(iterations=1, batch_size=4, device="cpu", t_init=40, t_min=4, t_max=70, lambda_regression=0.0)
    teacher_labels = []

    def spy(module, args, kwargs, output):  # deep copies of the UNet keep the hook; the teacher is the one in eval mode
        if not module.training:
            teacher_labels.append(kwargs["class_labels"].tolist())

    handle = pipe.unet.register_forward_hook(spy, with_kwargs=True)
    try:
        plain = SFD(forget_negative=0.0, **kw).fit(pipe, forget=[7], retain=[1, 2], override=[3])
        without, teacher_labels[:] = list(teacher_labels), []
        steered = SFD(forget_negative=1.0, **kw).fit(pipe, forget=[7], retain=[1, 2], override=[3])
    finally:
        handle.remove()
    assert len(without) == 1 and without[0][-1] == 3  # one call; the forgotten row at the override
    assert len(teacher_labels) == 2 and teacher_labels[0] == without[0] and teacher_labels[1] == [7]
    assert plain.history_[0]["loss_fake"] == steered.history_[0]["loss_fake"]  # the fake-score step is untouched
    assert plain.history_[0]["forget_gen"] != steered.history_[0]["forget_gen"]
    with pytest.raises(GuardgenError, match="forget_negative"):
        SFD(iterations=1, forget_negative=-1.0, device="cpu").fit(pipe, forget=[7], retain=[1], override=[1])
