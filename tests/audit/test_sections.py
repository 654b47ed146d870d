"""Section functions on controlled inputs: they must flag what they claim to flag."""

import pytest
import torch

from guardgen.audit import AuditConfig
from guardgen.audit.membership import attack_figures
from guardgen.audit.memorization import calibrated_l2, ct_score, memorization_section
from guardgen.audit.verdicts import judge, verdicts_section
from guardgen.audit.subject import load_data
from guardgen.errors import GuardgenError


@pytest.fixture(scope="module")
def mnist():
    train, test, _ = load_data("mnist", (1, 16, 16))
    return train, test


def _pool(images):
    return {"images": images, "conditions": [None] * len(images), "classes": torch.full((len(images),), -1)}


def test_memorization_flags_samples_that_are_training_images(mnist):
    train, test = mnist
    cfg = AuditConfig(nn_neighbours=20)
    g = torch.Generator().manual_seed(0)
    copies = train.images[torch.randperm(len(train), generator=g)[:120]]
    copies = (copies + 0.01 * torch.randn(copies.shape, generator=g)).clamp(0, 1)  # copies up to 8-bit noise
    s = memorization_section(_pool(copies), train, test, None, config=cfg)
    assert s.figures["extraction_rate"] == 1.0 and s.figures["extracted_unique_training_images"] == 120
    assert s.figures["auth_pct"] <= 5 and s.figures["ct_score"] < -6  # AuthPct and C_T agree: copies
    fresh = memorization_section(_pool(test.images[torch.randperm(len(test), generator=g)[:120]]), train, test, None, config=cfg)
    assert fresh.figures["extraction_rate"] <= 0.05  # novel real digits are not copies
    assert fresh.figures["auth_pct"] >= 40 and fresh.figures["ct_score"] > -3
    v = verdicts_section({"memorization": s}, cfg.thresholds)
    assert v["sections"]["memorization"]["status"] == "fail"
    assert s.images["closest_pairs"][0].shape[0] == 2 * cfg.gallery_size


def test_calibrated_l2_matches_hand_computation():
    train = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    q = torch.tensor([[1.0, 0.0]])
    cal, d, i = calibrated_l2(q, train, n=3, alpha=0.5)
    mean = (1.0 + 2.0 + 17 ** 0.5) / 3
    assert i.item() == 0 and d.item() == pytest.approx(1.0)
    assert cal.item() == pytest.approx(1.0 / (0.5 * mean), rel=1e-5)


def test_ct_score_is_negative_for_copies_and_near_zero_for_fresh_data():
    import numpy as np

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(600, 8)), rng.normal(size=(300, 8))
    copies = train[:300] + 1e-3 * rng.normal(size=(300, 8))
    assert ct_score(copies, test, train)["ct_score"] < -5
    assert abs(ct_score(rng.normal(size=(300, 8)), test, train)["ct_score"]) < 3


def test_membership_attack_figures():
    strong = attack_figures(torch.arange(100.0) + 1000, torch.arange(100.0))
    assert strong["auroc"] == 1.0 and strong["tpr_at_1pct_fpr"] == 1.0
    g = torch.Generator().manual_seed(0)
    chance = attack_figures(torch.randn(400, generator=g), torch.randn(400, generator=g))
    assert 0.4 < chance["auroc"] < 0.6
    assert chance["auroc_ci95"][0] < chance["auroc"] < chance["auroc_ci95"][1]


def test_membership_blackbox_flags_a_model_that_samples_its_training_set(mnist):
    from guardgen.audit.membership import membership_section

    train, test = mnist

    class CopyingModel:  # a stand-in generator whose samples are its training images
        kind, cond, spec = "one-step", None, "copying"

        def loss_attack_available(self):
            return "stand-in"

    pool = _pool(train.images[:2000])
    s = membership_section(CopyingModel(), pool, train.subset(slice(0, 2000)), test, config=AuditConfig(mia_members=200))
    assert s.figures["attacks"]["gan_leaks_blackbox"]["auroc"] > 0.95
    assert verdicts_section({"membership": s}, AuditConfig().thresholds)["sections"]["membership"]["status"] == "fail"


def test_judge_and_thresholds_from_config(tmp_path):
    t = {"warn": 0.6, "fail": 0.75, "bad": "above"}
    assert [judge(v, t) for v in (0.5, 0.7, 0.8, None)] == ["pass", "warn", "fail", "info"]
    path = tmp_path / "audit.json"
    path.write_text('{"samples_per_class": 5, "thresholds": {"membership": {"auroc": {"warn": 0.9, "fail": 0.95}}}}')
    cfg = AuditConfig.from_sources(path, {"thresholds.memorization.extraction_rate.fail": "0.5", "seed": 3})
    assert cfg.samples_per_class == 5 and cfg.seed == 3
    assert cfg.thresholds["membership"]["auroc"] == {"warn": 0.9, "fail": 0.95, "bad": "above"}
    assert cfg.thresholds["memorization"]["extraction_rate"]["fail"] == 0.5
    with pytest.raises(GuardgenError, match="unknown audit setting"):
        AuditConfig.from_sources(None, {"samples": 3})
    with pytest.raises(GuardgenError, match="unknown threshold"):
        AuditConfig.from_sources(None, {"thresholds.quality.nope.warn": 1})
    with pytest.raises(GuardgenError, match="milder"):
        AuditConfig.from_sources(None, {"thresholds.membership.auroc.fail": 0.5})


def test_forensics_reports_how_detectable_samples_are(tmp_path, mnist):
    from detectors.detector import Detector
    from guardgen.audit.forensics import forensics_section

    _, test = mnist
    real = test.images[:64]
    fake = real.clone()
    fake[:, :, 4:8, 4:8] = 1.0  # a planted, separable generator artifact
    det = Detector(backbone="guardgen_digitnet", model_args={"width": 8}, epochs=6, batch_size=16, lr=3e-3, device="cpu")
    det.fit(real, fake).save_pretrained(tmp_path / "det")
    samples = test.images[100:164].clone()
    samples[:, :, 4:8, 4:8] = 1.0
    s = forensics_section(_pool(samples), test.subset(slice(100, 164)), detector=str(tmp_path / "det"), attribution=None)
    assert s.figures["detection_rate"] >= 0.9 and s.figures["real_false_positive_rate"] <= 0.1
    assert s.figures["auroc_samples_vs_real"] >= 0.95
    with pytest.raises(GuardgenError, match="never unpickles"):
        torch.save({}, tmp_path / "det.pt")
        forensics_section(_pool(samples), None, detector=str(tmp_path / "det.pt"), attribution=None)
    assert forensics_section(_pool(samples), None, detector=None, attribution=None).status == "not run"


def test_copyright_section_is_thin_and_says_why_not(monkeypatch, tiny_class_pipeline):
    import sys
    import types

    from guardgen.audit.copyright import copyright_section

    cfg = AuditConfig()
    assert "no shard models" in copyright_section(None, [], [0], config=cfg).why
    fake = types.ModuleType("guardgen.copyright")
    monkeypatch.setitem(sys.modules, "guardgen.copyright", fake)
    assert "no audit_naf" in copyright_section(None, [str(tiny_class_pipeline)] * 2, [0], config=cfg).why
    calls = {}

    def audit_naf(model, shards, *, conditions, samples, seed):
        calls.update(n_shards=len(shards), conditions=conditions, samples=samples)
        return {"k_values": [0.5, 1.0, 2.0], "k_threshold": 1.5, "acceptance": 0.8, "effective_k": 1.5 + 0.3219}

    fake.audit_naf = audit_naf
    s = copyright_section(types.SimpleNamespace(model="pipe"), [str(tiny_class_pipeline)] * 2, [0, 1], config=cfg)
    assert s.status == "ran" and calls == {"n_shards": 2, "conditions": [0, 1], "samples": cfg.copyright_samples}
    assert s.figures["k_max"] == 2.0 and s.figures["acceptance"] == 0.8 and "k" in s.plots
    assert verdicts_section({"copyright": s}, cfg.thresholds)["sections"]["copyright"]["status"] == "info"  # not judged
    judged = AuditConfig.from_sources(None, {"thresholds.copyright.effective_k.warn": 4, "thresholds.copyright.effective_k.fail": 8})
    assert verdicts_section({"copyright": s}, judged.thresholds)["sections"]["copyright"]["status"] == "pass"


def test_forensics_attributes_samples_to_their_source(tmp_path):
    from detectors.attribution import OpenWorldAttribution
    from guardgen.audit.forensics import forensics_section

    def make_sources(n, seed):  # smooth random images plus one fixed fingerprint per generator source
        g = torch.Generator().manual_seed(seed)
        marks = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(123)) * 0.2
        marks[0] = 0
        x = torch.cat([(torch.nn.functional.avg_pool2d(torch.rand(n, 1, 16, 16, generator=g), 2) * 0.6 + 0.2 + marks[s]).clamp(0, 1)
                       for s in range(3)])
        return x, torch.arange(3).repeat_interleave(n)

    x, y = make_sources(120, seed=0)
    model = OpenWorldAttribution(width=8, embed_dim=32, epochs=15, lr=3e-3, batch_size=64, wta_permutations=512, device="cpu")
    model.fit(x, y, ["real", "gan-a", "gan-b"]).save_pretrained(tmp_path / "attr")
    xt, yt = make_sources(40, seed=1)
    s = forensics_section(_pool(xt[yt == 2]), None, detector=None, attribution=str(tmp_path / "attr"))
    figures = s.figures["attribution"]
    assert figures["top_source"] == "gan-b" and figures["top_share"] >= 0.7
    assert sum(figures["counts"].values()) == 40 and s.plots["attribution"]["kind"] == "bars"
