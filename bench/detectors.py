"""Benchmark AIGC detectors on the zoo: standard training vs OMAT, one run, same data and seeds.

    python -m bench.detectors                                   # CPU, about 5 minutes on 2 idle cores
    python -m bench.detectors --tag cpu-large --pool-size 256 --refresh-size 128 --omat-epochs 10 --pool-repeat 2
                                                                # a larger OMAT budget (about 3x longer)

GPU training throughput (fp32 and bf16) comes from bench/detector_throughput.py (Detector.fit alone): H200 in
bench/results/detector_throughput-h200.json, H100 in bench/results/detectors-h100-throughput.json.

Real = MNIST at 16x16 (train split for training, test split halved into held-out reals, which fix the
TPR@1%FPR threshold, and test reals). Training fakes come from one diffusion generator (zoo:mnist-ddpm,
5-step DDIM, as in the attack); every other zoo generator with weights (mnist-ddim-b, mnist-t2i, mnist-gan*) is a test-only
source. Both detectors are the zoo backbone (timm ``guardgen_digitnet``); OMAT starts from the standard
detector and adds an offline pool plus refreshed pools of on-manifold adversarial fakes.

Figures (targets of issue 4): on-manifold attack success at a fixed step budget on the same latents
(OMAT <= 0.5x standard), mean cross-generator AUROC over the held-out generators (OMAT >= standard, with a
paired bootstrap CI of the difference; also split by family, diffusion and GAN), in-distribution accuracy drop
(<= 1 point), training throughput.
Writes bench/results/detectors-TAG.json after every stage and a markdown table (.md beside it).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

if not __package__:  # as a file, bench/ comes first on sys.path and bench/detectors.py shadows the package
    raise SystemExit("run it from the repository root as a module: python -m bench.detectors")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attacks.on_manifold import OnManifoldAttack  # noqa: E402
from attacks.pgd import PGD  # noqa: E402
from detectors.detector import Detector  # noqa: E402
from detectors.evaluate import evaluate_generators, format_control, leave_one_generator_out, paired_mean_auroc_difference, robustness_grid  # noqa: E402
from detectors.omat import OMAT, generator_conditions  # noqa: E402
from guardgen.checkpoint import save_json  # noqa: E402
from guardgen.data import load_mnist  # noqa: E402
from guardgen.models import load_model  # noqa: E402
from guardgen.models.diffusion import sample_images  # noqa: E402
from guardgen.utils import machine_info, seed_everything  # noqa: E402
from guardgen.zoo import ZOO, zoo_path  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TRAIN_GENERATOR = "mnist-ddpm"
TARGETS = {"attack_success_ratio": "<= 0.5 (OMAT / standard)", "mean_cross_auroc_difference": ">= 0 (OMAT - standard)",
           "in_distribution_accuracy_drop": "<= 0.01"}


def sample_source(name: str, n: int, *, steps: int, seed: int) -> torch.Tensor:
    model = load_model(f"zoo:{name}")
    if isinstance(model, tuple):  # a GAN: (generator, discriminator)
        from guardgen.models.gan import sample_gan

        return sample_gan(model[0], n, generator_rng=torch.Generator().manual_seed(seed))
    return sample_images(model, generator_conditions(model, n, seed=seed), num_inference_steps=steps, seed=seed)


def available_generators() -> list[str]:
    names = []
    for name, entry in sorted(ZOO.items()):
        if entry.kind in ("diffusion", "t2i", "gan") or name.startswith("mnist-gan"):
            try:
                zoo_path(name)
            except Exception:  # noqa: BLE001 - not built: not part of this run
                continue
            names.append(name)
    return names


def family(name: str) -> str:
    """'gan' or 'diffusion', from the zoo entry."""
    return "gan" if ZOO[name].kind == "gan" else "diffusion"


def in_distribution_accuracy(det, real, fake) -> float:
    p_r, p_f = det.predict_proba(real), det.predict_proba(fake)
    return float(((p_r <= det.threshold).sum() + (p_f > det.threshold).sum()) / (len(p_r) + len(p_f)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mixed-precision", default="no")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=2000, help="real and fake training images each")
    ap.add_argument("--n-test", type=int, default=500, help="test images per generator")
    ap.add_argument("--sample-steps", type=int, default=5, help="DDIM steps, sampling and attack alike")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--pretrained", default="", help="backbone weights: 'oracle' (the zoo's digit classifier, width 32) "
                    "or a .safetensors path; default: from scratch")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--attack-n", type=int, default=128, help="latents attacked for the success figures (at 32, one "
                    "success moves the rate by 0.03 and its 95%% interval is about +-0.17)")
    ap.add_argument("--attack-steps", type=int, default=8)
    ap.add_argument("--attack-lr", type=float, default=0.1)
    ap.add_argument("--pool-size", type=int, default=64)
    ap.add_argument("--refresh-every", type=int, default=1)
    ap.add_argument("--refresh-size", type=int, default=32)
    ap.add_argument("--omat-epochs", type=int, default=6)
    ap.add_argument("--pool-repeat", type=int, default=3)
    ap.add_argument("--augment", type=float, default=0.0, help="blur + JPEG training augmentation probability (CNNDetection)")
    ap.add_argument("--blur-max", type=float, default=1.0, help="largest blur sigma of the augmentation, px at 16 px")
    ap.add_argument("--pool-threshold", type=float, default=0.5, help="OMAT's pool attacks run until p_fake < this "
                    "(below 0.5: high-confidence adversarial fakes, the attack goes past the decision boundary)")
    ap.add_argument("--pool-steps", type=int, default=0, help="attack steps for OMAT's pools (0: --attack-steps)")
    ap.add_argument("--keep", default="all", choices=["all", "success"], help="attacked images kept in OMAT's pool")
    ap.add_argument("--omat-lr", type=float, default=0.0, help="learning rate of OMAT's adversarial rounds (0: OMAT's default, --lr / 4)")
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--loo", action="store_true", help="also run leave-one-generator-out (standard detectors)")
    args = ap.parse_args()

    t_start = time.perf_counter()
    seed_everything(args.seed)
    out_path = RESULTS / f"detectors-{args.tag}.json"
    res: dict = {"config": vars(args), "machine": machine_info(), "targets": TARGETS, "stages": {}}

    def stage(name: str, t0: float) -> None:
        res["stages"][name] = round(time.perf_counter() - t0, 1)
        res["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        save_json(res, out_path)

    # ---------------------------------------------------------------- data
    t0 = time.perf_counter()
    train_real_all = load_mnist("train", 16).images
    perm = torch.randperm(len(train_real_all), generator=torch.Generator().manual_seed(args.seed))
    real_tr = train_real_all[perm[: args.n_train]]
    test_all = load_mnist("test", 16).images
    perm = torch.randperm(len(test_all), generator=torch.Generator().manual_seed(args.seed + 1))
    real_held, real_test = test_all[perm[: len(perm) // 2]], test_all[perm[len(perm) // 2:]]
    fake_tr = sample_source(TRAIN_GENERATOR, args.n_train, steps=args.sample_steps, seed=args.seed + 10)
    generators = available_generators()
    test_fakes = {g: sample_source(g, args.n_test, steps=args.sample_steps, seed=args.seed + 20 + i)
                  for i, g in enumerate(generators)}
    held_out = [g for g in generators if g != TRAIN_GENERATOR]
    res["data"] = {"real_train": len(real_tr), "real_heldout": len(real_held), "real_test": len(real_test),
                   "train_generator": TRAIN_GENERATOR, "fake_train": len(fake_tr), "test_generators": generators,
                   "held_out_generators": held_out}
    stage("data", t0)

    # ---------------------------------------------------------------- standard detector
    det_cfg = {"backbone": "guardgen_digitnet", "model_args": {"width": args.width}, "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "device": args.device, "mixed_precision": args.mixed_precision,
               "seed": args.seed, "augment": args.augment, "blur_sigma": (0.0, args.blur_max)}
    if args.pretrained:
        det_cfg["pretrained_file"] = str(zoo_path("mnist-oracle") / "model.safetensors") if args.pretrained == "oracle" else args.pretrained
    t0 = time.perf_counter()
    standard = Detector(**det_cfg).fit(real_tr, fake_tr)
    res["standard_train"] = {"seconds": round(standard.train_seconds_, 2), "images_per_second": round(standard.train_images_per_second_, 1)}
    stage("standard_train", t0)

    # same extra epochs without adversarial fakes (control for OMAT's longer training)
    t0 = time.perf_counter()
    control = standard.clone()
    control.warm_start, control.epochs = True, args.omat_epochs
    control.fit(real_tr, fake_tr)
    stage("control_train", t0)

    # ---------------------------------------------------------------- OMAT
    ddpm = load_model(f"zoo:{TRAIN_GENERATOR}")
    t0 = time.perf_counter()
    omat = OMAT(detector=det_cfg, epochs=args.omat_epochs, pool_size=args.pool_size, refresh_every=args.refresh_every,
                refresh_size=args.refresh_size, pool_repeat=args.pool_repeat, keep=args.keep, seed=args.seed, lr=args.omat_lr,
                attack={"steps": args.pool_steps or args.attack_steps, "lr": args.attack_lr, "threshold": args.pool_threshold,
                        "num_inference_steps": args.sample_steps, "batch_size": 32})
    omat.fit(real_tr, fake_tr, pipe=ddpm, base=standard)
    robust = omat.detector_
    trained_images = args.omat_epochs * (len(real_tr) + len(fake_tr)) + args.pool_repeat * args.omat_epochs * len(omat.pool_)
    res["omat_train"] = {"seconds_total": round(omat.train_seconds_, 2), "pool": len(omat.pool_), "attack_log": omat.attack_log_,
                         "images_per_second_last_round": round(robust.train_images_per_second_, 1),
                         "images_per_second_including_attacks": round(trained_images / omat.train_seconds_, 1)}
    stage("omat_train", t0)

    detectors = {"standard": standard, "standard+epochs": control, "omat": robust}

    # ---------------------------------------------------------------- per-generator evaluation
    t0 = time.perf_counter()
    evals, res["per_generator"], res["summary"] = {}, {}, {}
    for name, det in detectors.items():
        ev = evaluate_generators(det, real_test, test_fakes, real_heldout=real_held, fpr=0.01, n_boot=args.n_boot, seed=args.seed)
        evals[name] = ev
        res["per_generator"][name] = {k: v for k, v in ev.items() if k != "scores"}
        auroc = {g: ev["generators"][g]["auroc"] for g in held_out}
        res["summary"][name] = {
            "in_distribution_accuracy": in_distribution_accuracy(det, real_test, test_fakes[TRAIN_GENERATOR]),
            "mean_cross_auroc": float(np.mean(list(auroc.values()))) if held_out else float("nan"),
            "mean_cross_auroc_by_family": {f: float(np.mean([a for g, a in auroc.items() if family(g) == f]))
                                           for f in sorted({family(g) for g in held_out})},
        }
    for name in ("standard+epochs", "omat"):
        if held_out:
            res["summary"][name]["mean_cross_auroc_difference_vs_standard"] = paired_mean_auroc_difference(
                evals["standard"]["scores"], evals[name]["scores"], held_out, n_boot=args.n_boot, seed=args.seed)
    stage("evaluate", t0)

    # ---------------------------------------------------------------- attacks at a fixed budget, same latents
    t0 = time.perf_counter()
    attack = OnManifoldAttack(steps=args.attack_steps, lr=args.attack_lr, num_inference_steps=args.sample_steps,
                              batch_size=32, seed=args.seed + 777)
    conds = generator_conditions(ddpm, args.attack_n, seed=args.seed + 777)
    res["attack"] = {}
    clean = None
    for name in ("standard", "omat"):
        r = attack.attack(ddpm, detectors[name].as_module(), conds)
        clean = r.clean
        detected = r.score_before >= attack.threshold  # fakes the detector caught before the attack
        res["attack"][name] = {**r.summary(), "success": r.success.tolist(), "steps": r.steps.tolist(),
                               "initially_detected": int(detected.sum()),
                               "success_rate_on_detected": float(r.success[detected].float().mean()) if detected.any() else float("nan")}
        stage(f"attack_{name}", t0)
    # off-manifold baseline: pixel PGD (L-inf 4/255) on the same clean images
    for name in ("standard", "omat"):
        det = detectors[name]
        adv = PGD(eps=4 / 255, step_size=1 / 255, steps=10).attack(det.as_module(), clean, torch.ones(len(clean)),
                                                                    generator=torch.Generator().manual_seed(args.seed))
        res["attack"][name]["pgd_linf_4_255_success_rate"] = float((det.predict_proba(adv) < det.threshold).float().mean())
        res["attack"][name]["clean_detected_rate"] = float((det.predict_proba(clean) > det.threshold).float().mean())
    s_std, s_omat = res["attack"]["standard"]["success_rate"], res["attack"]["omat"]["success_rate"]
    res["summary"]["attack_success_ratio"] = s_omat / s_std if s_std > 0 else float("nan")
    res["summary"]["attack_success_ratio_ci"] = paired_ratio_ci(res["attack"]["standard"]["success"], res["attack"]["omat"]["success"],
                                                                n_boot=args.n_boot, seed=args.seed)
    d_std, d_omat = res["attack"]["standard"]["success_rate_on_detected"], res["attack"]["omat"]["success_rate_on_detected"]
    res["summary"]["attack_success_ratio_on_detected"] = d_omat / d_std if d_std > 0 else float("nan")
    stage("attacks", t0)

    # ---------------------------------------------------------------- robustness, format control
    t0 = time.perf_counter()
    res["robustness"] = {n: robustness_grid(detectors[n], real_test, test_fakes[TRAIN_GENERATOR], seed=args.seed) for n in ("standard", "omat")}
    res["format_control"] = {n: format_control(detectors[n], real_test, test_fakes[TRAIN_GENERATOR]) for n in ("standard", "omat")}
    stage("robustness", t0)

    if args.loo and len(generators) > 2:
        t0 = time.perf_counter()
        half = {g: v[: len(v) // 2] for g, v in test_fakes.items()}
        rest = {g: v[len(v) // 2:] for g, v in test_fakes.items()}
        res["leave_one_generator_out"] = leave_one_generator_out(
            lambda r, f: Detector(**det_cfg).fit(r, f), real_tr, half, real_test, rest, real_heldout=real_held,
            n_boot=args.n_boot, seed=args.seed)
        stage("leave_one_generator_out", t0)

    # ---------------------------------------------------------------- verdicts and markdown
    std, rob = res["summary"]["standard"], res["summary"]["omat"]
    drop = std["in_distribution_accuracy"] - rob["in_distribution_accuracy"]
    diff = rob.get("mean_cross_auroc_difference_vs_standard", {"difference": float("nan"), "ci": (float("nan"),) * 2})
    res["verdicts"] = {
        "attack_success_ratio": {"value": res["summary"]["attack_success_ratio"], "ci": res["summary"]["attack_success_ratio_ci"],
                                 "met": res["summary"]["attack_success_ratio"] <= 0.5},
        "mean_cross_auroc_difference": {"value": diff["difference"], "ci": diff["ci"], "met": diff["difference"] >= 0},
        "in_distribution_accuracy_drop": {"value": drop, "met": drop <= 0.01},
    }
    res["markdown"] = markdown(res, held_out)
    save_json(res, out_path)
    (RESULTS / f"detectors-{args.tag}.md").write_text(res["markdown"])
    print(res["markdown"])


def paired_ratio_ci(success_a: list, success_b: list, *, n_boot: int, seed: int) -> tuple[float, float]:
    """95% bootstrap interval of mean(b) / mean(a) over the same latents, resampled in pairs; resamples where a never
    succeeds are dropped."""
    a, b = np.asarray(success_a, dtype=float), np.asarray(success_b, dtype=float)
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(a), len(a))
        if a[idx].sum() > 0:
            ratios.append(b[idx].sum() / a[idx].sum())
    if not ratios:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return (float(lo), float(hi))


def markdown(res: dict, held_out: list[str]) -> str:
    s, v, a = res["summary"], res["verdicts"], res["attack"]
    lines = ["## Standard vs OMAT detector (zoo, train on mnist-ddpm)", "",
             "| figure | standard | standard + same epochs | OMAT | target | met |", "|---|---|---|---|---|---|",
             f"| on-manifold attack success ({res['config']['attack_steps']} steps, {res['config']['attack_n']} latents) | "
             f"{a['standard']['success_rate']:.3f} | | {a['omat']['success_rate']:.3f} | OMAT <= 0.5x standard "
             f"(ratio {v['attack_success_ratio']['value']:.2f}, 95% CI {v['attack_success_ratio']['ci'][0]:.2f} to "
             f"{v['attack_success_ratio']['ci'][1]:.2f}) | {'yes' if v['attack_success_ratio']['met'] else 'no'} |",
             f"| mean cross-generator AUROC ({', '.join(held_out)}) | {s['standard']['mean_cross_auroc']:.4f} | "
             f"{s['standard+epochs']['mean_cross_auroc']:.4f} | {s['omat']['mean_cross_auroc']:.4f} | OMAT >= standard "
             f"(diff {v['mean_cross_auroc_difference']['value']:+.4f}, 95% CI {v['mean_cross_auroc_difference']['ci'][0]:+.4f} to "
             f"{v['mean_cross_auroc_difference']['ci'][1]:+.4f}) | {'yes' if v['mean_cross_auroc_difference']['met'] else 'no'} |",
             *[f"| mean cross-generator AUROC, {f} only | {s['standard']['mean_cross_auroc_by_family'][f]:.4f} | "
               f"{s['standard+epochs']['mean_cross_auroc_by_family'][f]:.4f} | {s['omat']['mean_cross_auroc_by_family'][f]:.4f} | "
               f"(reported) | |" for f in s["standard"]["mean_cross_auroc_by_family"]],
             f"| in-distribution accuracy (test reals + mnist-ddpm) | {s['standard']['in_distribution_accuracy']:.4f} | "
             f"{s['standard+epochs']['in_distribution_accuracy']:.4f} | {s['omat']['in_distribution_accuracy']:.4f} | drop <= 0.01 "
             f"(drop {v['in_distribution_accuracy_drop']['value']:+.4f}) | {'yes' if v['in_distribution_accuracy_drop']['met'] else 'no'} |",
             f"| attack success among initially detected fakes | {a['standard']['success_rate_on_detected']:.3f} "
             f"({a['standard']['initially_detected']}) | | {a['omat']['success_rate_on_detected']:.3f} ({a['omat']['initially_detected']}) | "
             f"(ratio {s['attack_success_ratio_on_detected']:.2f}) | |",
             f"| PGD L-inf 4/255 success (off-manifold) | {a['standard']['pgd_linf_4_255_success_rate']:.3f} | | "
             f"{a['omat']['pgd_linf_4_255_success_rate']:.3f} | (reference) | |",
             f"| mean latent drift of the attack | {a['standard']['mean_drift']:.3f} | | {a['omat']['mean_drift']:.3f} | | |",
             f"| training throughput (images/s) | {res['standard_train']['images_per_second']:.0f} | | "
             f"{res['omat_train']['images_per_second_last_round']:.0f} (training only); "
             f"{res['omat_train']['images_per_second_including_attacks']:.0f} incl. attacks | | |",
             "", "## Per generator (test reals vs each generator; TPR@1%FPR threshold from held-out reals)", "",
             "| detector | generator | acc real | acc fake | AUROC (95% CI) | AP | TPR@1%FPR |", "|---|---|---|---|---|---|---|"]
    for det, ev in res["per_generator"].items():
        for g, r in ev["generators"].items():
            lines.append(f"| {det} | {g}{' (train)' if g == TRAIN_GENERATOR else ''} | {r['acc_real']:.3f} | {r['acc_fake']:.3f} | "
                         f"{r['auroc']:.4f} ({r['auroc_ci'][0]:.3f}-{r['auroc_ci'][1]:.3f}) | {r['ap']:.4f} | {r['tpr_at_fpr']:.3f} |")
    lines += ["", "## Robustness (mnist-ddpm test fakes; AUROC)", "", "| perturbation | standard | OMAT |", "|---|---|---|"]
    for rs, ro in zip(res["robustness"]["standard"], res["robustness"]["omat"]):
        lines.append(f"| {rs['perturbation']} {rs['level']} | {rs['auroc']:.4f} | {ro['auroc']:.4f} |")
    lines += ["", "## Format-shortcut control (AUROC)", "", "| setting | standard | OMAT |", "|---|---|---|"]
    for rs, ro in zip(res["format_control"]["standard"], res["format_control"]["omat"]):
        lines.append(f"| {rs['setting']} | {rs['auroc']:.4f} | {ro['auroc']:.4f} |")
    if "leave_one_generator_out" in res:
        lines += ["", "## Leave one generator out (standard detector)", "", "| held-out generator | AUROC | acc fake |", "|---|---|---|"]
        for g, r in res["leave_one_generator_out"].items():
            lines.append(f"| {g} | {r['auroc']:.4f} | {r['acc_fake']:.3f} |")
    lines += ["", f"Wall time {res['wall_seconds']:.0f} s; stages: {res['stages']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
