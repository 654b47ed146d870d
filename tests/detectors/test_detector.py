"""Detector: learns a planted signal, both modes, timm backbones, save/load with preprocessing."""

import pytest
import torch

from detectors import DETECTORS
from detectors.detector import Detector
from guardgen.errors import GuardgenError


def planted(n, seed, size=16):
    """Reals: noise in [0, 0.5]; fakes: the same plus a bright 4x4 patch (a separable artifact)."""
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 1, size, size, generator=g) * 0.5
    fake = torch.rand(n, 1, size, size, generator=g) * 0.5
    fake[:, :, 4:8, 4:8] += 0.5
    return real, fake


def tiny(**kw):
    return Detector(**{"backbone": "guardgen_digitnet", "model_args": {"width": 8}, "epochs": 6, "batch_size": 16,
                       "lr": 3e-3, "device": "cpu", **kw})


def test_registered():
    assert DETECTORS.get("detector") is Detector


def test_detector_learns_a_planted_artifact():
    real, fake = planted(64, 0)
    det = tiny().fit(real, fake)
    assert det.train_images_per_second_ > 0
    real_t, fake_t = planted(64, 1)
    acc = ((det.predict_proba(real_t) < 0.5).float().mean() + (det.predict_proba(fake_t) > 0.5).float().mean()) / 2
    assert acc > 0.9
    untrained = tiny(epochs=0).fit(real, fake)
    acc0 = ((untrained.predict_proba(real_t) < 0.5).float().mean() + (untrained.predict_proba(fake_t) > 0.5).float().mean()) / 2
    assert acc0 < 0.75


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lr_schedule(schedule):
    real, fake = planted(32, 0)
    det = tiny(epochs=2, lr_schedule=schedule).fit(real, fake)
    lrs = [h["lr"] for h in det.history_]
    assert len(lrs) == 8 and lrs[0] == pytest.approx(3e-3)
    if schedule == "cosine":  # decays every step towards 0 over the whole run
        assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.05 * lrs[0]
    else:
        assert all(lr == pytest.approx(3e-3) for lr in lrs)


@pytest.mark.parametrize("mode", ["finetune", "linear_probe"])
def test_losses_read_back_every_few_steps_are_logged_step_by_step(mode):
    """log_every only batches the host syncs: each step is logged once, in order, and training is unchanged."""
    real, fake = planted(40, 0)  # 80 images at batch 16: 5 steps an epoch, 10 in all, flushed at 4, 8 and the end
    seen = []
    det = tiny(epochs=2, mode=mode, log_every=4).fit(real, fake, callback=lambda step, logs: seen.append((step, logs)))
    ref = tiny(epochs=2, mode=mode, log_every=1).fit(real, fake)
    assert [s for s, _ in seen] == list(range(1, 11))
    assert [h["step"] for h in det.history_] == list(range(1, 11))
    assert [logs["epoch"] for _, logs in seen] == [1] * 5 + [2] * 5
    assert [h["loss"] for h in det.history_] == pytest.approx([h["loss"] for h in ref.history_])
    assert torch.equal(det.predict_proba(real), ref.predict_proba(real))


@pytest.mark.parametrize("mode,augment,stop", [("finetune", 0.5, 7), ("finetune", 0.0, 5), ("linear_probe", 0.0, 8)])
def test_an_interrupted_fit_resumes_step_for_step(tmp_path, mode, augment, stop, stop_at):
    """Stopped mid-epoch (7, 8) or at an epoch's end (5 steps an epoch), then resumed: the same as one run."""
    real, fake = planted(40, 0)
    kw = dict(epochs=3, mode=mode, augment=augment, blur_sigma=(0.0, 1.0), checkpoint_every=2, log_every=3)
    ref = tiny(**kw).fit(real, fake)
    state = tmp_path / "state"
    with pytest.raises(stop_at.error):
        tiny(**kw).fit(real, fake, state_dir=state, callback=stop_at(stop))
    assert (state / "state.json").is_file()
    steps = []
    det = tiny(**kw).fit(real, fake, state_dir=state, resume=True, callback=lambda step, logs: steps.append(step))
    assert steps[0] > 1 and steps[-1] == 15  # it did not start over
    assert [h["loss"] for h in det.history_] == pytest.approx([h["loss"] for h in ref.history_], rel=1e-5)
    assert torch.allclose(det.predict_proba(real), ref.predict_proba(real), atol=1e-6)
    assert not state.exists()  # removed once training ended


def test_without_resume_an_old_state_is_not_used(tmp_path, stop_at):
    real, fake = planted(40, 0)
    state = tmp_path / "state"
    with pytest.raises(stop_at.error):
        tiny(epochs=2, checkpoint_every=2).fit(real, fake, state_dir=state, callback=stop_at(6))
    steps = []
    tiny(epochs=2, checkpoint_every=2).fit(real, fake, state_dir=state, callback=lambda step, logs: steps.append(step))
    assert steps == list(range(1, 11))


def test_divergence_stops_with_a_clear_error():
    real, fake = planted(32, 0)
    with pytest.raises(FloatingPointError, match="not finite"):
        tiny(epochs=3, lr=1e30, log_every=3).fit(real, fake)


def test_linear_probe_trains_only_the_head():
    real, fake = planted(64, 0)
    det = tiny(epochs=0).fit(real, fake)
    before = {k: v.clone() for k, v in det.module_.net.state_dict().items()}
    det2 = tiny(mode="linear_probe", epochs=30, lr=3e-2).fit(real, fake)
    after = det2.module_.net.state_dict()
    head = {"head.weight", "head.bias"}
    assert all(torch.equal(before[k], after[k]) for k in before if k not in head and "num_batches" not in k)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    real_t, fake_t = planted(64, 1)
    from guardgen.metrics.detection import auroc

    y = torch.cat([torch.zeros(64), torch.ones(64)])
    assert auroc(y, torch.cat([det2.predict_proba(real_t), det2.predict_proba(fake_t)])) > 0.8


@pytest.mark.parametrize("backbone,args", [
    ("resnet18", {}),
    ("vit_tiny_patch16_224", {"patch_size": 4, "depth": 1}),
])
def test_timm_backbones_round_trip(tmp_path, backbone, args):
    real, fake = planted(8, 0)
    det = Detector(backbone=backbone, model_args=args, epochs=1, batch_size=8, device="cpu").fit(real, fake)
    det.save_pretrained(tmp_path / "d")
    back = Detector.from_pretrained(tmp_path / "d")
    x = torch.cat([real, fake])
    assert torch.allclose(det.predict_proba(x), back.predict_proba(x), atol=1e-6)


@pytest.mark.parametrize("edit", [
    lambda c: c["detector"].update(threshold="abc"),
    lambda c: c["preprocessing"].update(input_size=-1),
    lambda c: c["preprocessing"].update(input_size="abc"),
    lambda c: c["preprocessing"].pop("in_chans"),
    lambda c: c["preprocessing"].update(mean=["x"]),
])
def test_a_damaged_config_is_one_line(tmp_path, edit):
    import json

    real, fake = planted(16, 0)
    tiny(epochs=1).fit(real, fake).save_pretrained(tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    edit(config)
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    with pytest.raises(GuardgenError, match="a damaged detector config") as info:
        Detector.from_pretrained(tmp_path / "d")
    assert "\n" not in str(info.value)


def test_save_load_keeps_probabilities_and_preprocessing(tmp_path):
    real, fake = planted(32, 0)
    det = tiny(epochs=1, mean=(0.25,), std=(0.4,)).fit(real, fake)
    det.save_pretrained(tmp_path / "d")
    back = Detector.from_pretrained(tmp_path / "d")
    x = torch.cat([real, fake])
    assert torch.equal(det.predict_proba(x), back.predict_proba(x))
    assert back.config_["preprocessing"]["mean"] == [0.25] and back.config_["preprocessing"]["input_size"] == 16
    assert torch.allclose(back.module_.mean.flatten(), torch.tensor([0.25]))
    # other sizes / channels are adapted the way the config says (bilinear resize, gray conversion), with notes
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="nearest")
    notes = back.check_input(big.expand(-1, 3, -1, -1))
    assert any("resized" in n for n in notes) and any("channel" in n for n in notes)
    expected = det.predict_proba(torch.nn.functional.interpolate(big, size=(16, 16), mode="bilinear", antialias=True,
                                                                 align_corners=False))
    assert torch.allclose(back.predict_proba(big), expected, atol=1e-5)


def test_resize_none_refuses_other_sizes(tmp_path):
    real, fake = planted(16, 0)
    tiny(epochs=1, resize="none").fit(real, fake).save_pretrained(tmp_path / "d")
    back = Detector.from_pretrained(tmp_path / "d")
    with pytest.raises(GuardgenError, match="expects 16x16"):
        back.predict_proba(torch.rand(2, 1, 28, 28))


def test_a_detector_saved_with_an_unbounded_seed_still_loads(tmp_path):
    """Seeds are bounded to 32 bits now; an older folder's larger seed loads as the 32 bits torch used."""
    import json

    real, fake = planted(8, 0)
    tiny(epochs=1).fit(real, fake).save_pretrained(tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    config["detector"]["seed"] = 2**32 + 5
    (tmp_path / "d" / "config.json").write_text(json.dumps(config))
    back = Detector.from_pretrained(tmp_path / "d")
    assert back.seed == 5
    back.warm_start = True
    back.fit(real, fake)  # its settings pass the checks a fit makes


def test_bad_inputs():
    real, fake = planted(8, 0)
    with pytest.raises(GuardgenError, match="non-empty"):
        tiny().fit(real, fake[:0])
    with pytest.raises(GuardgenError, match="mode"):
        tiny(mode="lora").fit(real, fake)
    with pytest.raises(GuardgenError, match="lr_schedule"):
        tiny(lr_schedule="step").fit(real, fake)
    with pytest.raises(GuardgenError, match="one value, or one per channel"):
        tiny(mean=()).fit(real, fake)
    with pytest.raises(GuardgenError, match="each std > 0"):
        tiny(std=(0.0,)).fit(real, fake)
    with pytest.raises(GuardgenError, match="the images have 1 channel"):
        tiny(mean=(0.5, 0.5)).fit(real, fake)
    with pytest.raises(GuardgenError, match="not trained"):
        tiny().predict_proba(real)
    with pytest.raises(GuardgenError, match="not a detector folder"):
        Detector.from_pretrained("/nonexistent-folder")


def test_backbone_too_deep_for_the_input_size_is_one_line_error():
    real, fake = torch.zeros(4, 1, 16, 16), torch.ones(4, 1, 16, 16)
    with pytest.raises(GuardgenError, match="cannot run on 16x16 images.*--input-size"):
        Detector(backbone="test_convnext", epochs=1).fit(real, fake)
    Detector(backbone="test_convnext", epochs=1, input_size=32, batch_size=4).fit(real, fake)  # resized: it runs


def test_blur_jpeg_augmentation():
    from detectors.detector import _augment
    from detectors.evaluate import perturb

    real, fake = planted(200, 0)
    g = torch.Generator().manual_seed(0)
    assert _augment(real, 0.0, (0.0, 3.0), (30, 100), g) is real  # off: untouched, no random numbers drawn
    both = _augment(real[:4], 1.0, (1.0, 1.0), (90, 90), g)
    assert torch.allclose(both, perturb(perturb(real[:4], "blur", 1.0), "jpeg", 90))  # blur, then JPEG
    some = _augment(real, 0.5, (0.5, 2.0), (30, 100), g)
    changed = ((some - real).abs().flatten(1).amax(1) > 1e-6).float().mean()
    assert 0.6 < changed < 0.9  # 1 - 0.5 * 0.5 of the images get blur or JPEG or both
    a = tiny(epochs=1, augment=0.5, blur_sigma=(0.0, 1.0)).fit(real, fake)
    b = tiny(epochs=1, augment=0.5, blur_sigma=(0.0, 1.0)).fit(real, fake)
    c = tiny(epochs=1).fit(real, fake)
    pa, pb, pc = (d.predict_proba(real[:32]) for d in (a, b, c))
    assert torch.equal(pa, pb) and not torch.allclose(pa, pc)  # seeded, and the augmentation reaches training
    with pytest.raises(GuardgenError, match=r"augment=1.5: must be in \[0, 1\]"):
        tiny(augment=1.5).fit(real, fake)
    with pytest.raises(GuardgenError, match="finetune"):
        tiny(augment=0.5, mode="linear_probe").fit(real, fake)
    with pytest.raises(GuardgenError, match="blur_sigma"):
        tiny(augment=0.5, blur_sigma=(2.0, 1.0)).fit(real, fake)


@pytest.mark.parametrize("backbone", ["guardgen_digitnet", "test_resnet"])
def test_a_model_arg_the_backbone_does_not_take_is_one_line(backbone):
    real, fake = planted(8, 0)
    with pytest.raises(GuardgenError, match=f"backbone '{backbone}' does not take model args \\['bogus'\\]"):
        Detector(backbone=backbone, model_args={"bogus": 1}, epochs=1, batch_size=8, device="cpu").fit(real, fake)


@pytest.mark.parametrize("backbone,args", [
    ("guardgen_digitnet", {"width": -1}),  # torch: negative dimension
    ("guardgen_digitnet", {"width": "abc"}),  # a string where a number goes
    ("guardgen_digitnet", {"drop_rate": "x"}),
    ("vit_tiny_patch16_224", {"patch_size": 0}),  # ZeroDivisionError inside timm
    ("vit_tiny_patch16_224", {"embed_dim": 7}),  # timm's assertion: not divisible by the heads
])
def test_a_model_arg_value_the_backbone_cannot_build_with_is_one_line(backbone, args):
    real, fake = planted(8, 0)
    with pytest.raises(GuardgenError, match=f"backbone '{backbone}' cannot be built with model args"):
        Detector(backbone=backbone, model_args=args, epochs=0, input_size=32, device="cpu").fit(real, fake)


def test_resuming_with_other_settings_is_one_line(tmp_path, stop_at):
    real, fake = planted(40, 0)
    state = tmp_path / "state"
    with pytest.raises(stop_at.error):
        tiny(epochs=2, checkpoint_every=2).fit(real, fake, state_dir=state, callback=stop_at(6))
    with pytest.raises(GuardgenError, match="used other settings \\(model_args\\)"):
        tiny(epochs=2, model_args={"width": 16}).fit(real, fake, state_dir=state, resume=True)
