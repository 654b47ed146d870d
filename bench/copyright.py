"""Benchmark near access-freeness (NAF) on the zoo: protected MNIST works, full vs shard models, CP-k; one run.

    python -m bench.copyright                     # CPU, about 15 minutes on 2 shared cores
    python -m bench.copyright --device cuda --tag h100 --steps 4000

1. Exact CP-Δ on categorical toys (random q1, q2 per prompt): the combiners against their closed forms
   (target: max error <= 1e-6), their guarantees, exact CP-k against its rejection sampler, and Monte-Carlo
   checks of p(E) <= 2^k q(E) on random events.
2. The zoo experiment: two MNIST test digits (never in the zoo's training data) are planted in the train
   split as --copies noisy near-duplicates each; the data is sharded with the protected works deduplicated;
   the full model and the two shard models are trained with the zoo's own mnist-ddpm loop (small config).
   k is calibrated on clean classes (no protected work) as a quantile of the path log-ratio; then CP-k
   samples every class. Reported: the rate at which samples reproduce a protected work (RMS pixel distance
   to it below delta, calibrated as half the work's distance to its nearest clean training image) for the
   full model vs CP-k on the same seeds (target: >= 10x lower), k, acceptance, k + log2(1/ν), FD on oracle
   features for both (target: CP-k <= 1.2x the full model's), and Monte-Carlo checks of the max-KL bound
   p_k(E) <= 2^k_eff safe_C(E) for E = "reproduces C" (95% Clopper-Pearson intervals).
   The diffusion log-ratio is the per-step Gaussian path log-ratio: a proxy for image likelihoods.
Writes bench/results/copyright[-TAG].json and .md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from guardgen.checkpoint import save_json
from guardgen.copyright import (CPk, Shards, calibrate_k, cp_delta, cp_k, event_bound_max_kl, hellinger2, k_from_hellinger,
                                k_from_tv, kl, load_protected, max_kl, nn_distance, reproduction, sample_cp_k,
                                sample_with_log_ratios, shard_dataset, train_shard_models, tv, with_copies)
from guardgen.data import load_mnist, save_grid
from guardgen.metrics import fd_from_features
from guardgen.models import load_model
from guardgen.models.classifier import classifier_features
from guardgen.utils import machine_info

RESULTS = Path(__file__).parent / "results"
TARGETS = {"cp_delta_closed_form_max_error": "<= 1e-6", "reproduction_reduction": ">= 10x", "fd_ratio": "<= 1.2",
           "bound_violations": "== 0"}


def clopper_pearson(hits: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    from scipy.stats import beta

    lo = 0.0 if hits == 0 else float(beta.ppf(alpha / 2, hits, n - hits + 1))
    hi = 1.0 if hits == n else float(beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return lo, hi


def toy(seed: int, prompts: int = 200, vocab: int = 50, mc_samples: int = 20_000) -> dict:
    """Exact CP-Δ / CP-k on categorical models, against closed forms and by Monte Carlo."""
    g = torch.Generator().manual_seed(seed)
    q1 = torch.softmax(2 * torch.randn(prompts, vocab, generator=g, dtype=torch.float64), -1)
    q2 = torch.softmax(2 * torch.randn(prompts, vocab, generator=g, dtype=torch.float64), -1)
    # closed forms, written out independently of cp_delta
    lo = torch.minimum(q1, q2)
    closed_max = lo / lo.sum(-1, keepdim=True)
    gm = (q1 * q2).sqrt()
    closed_kl = gm / gm.sum(-1, keepdim=True)
    m, h = cp_delta([q1, q2], "max_kl"), cp_delta([q1, q2], "kl")
    tvs, h2s = torch.as_tensor(tv(q1, q2)), torch.as_tensor(hellinger2(q1, q2))
    out = {
        "prompts": prompts, "vocab": vocab,
        "max_kl_combiner_max_error": float((m.p - closed_max).abs().max()),
        "max_kl_normaliser_vs_1_minus_tv_max_error": float((m.z - (1 - tvs)).abs().max()),
        "kl_combiner_max_error": float((h.p - closed_kl).abs().max()),
        "kl_normaliser_vs_1_minus_h2_max_error": float((h.z - (1 - h2s)).abs().max()),
        "max_kl_guarantee_gap": float((torch.maximum(torch.as_tensor(max_kl(m.p, q1)), torch.as_tensor(max_kl(m.p, q2)))
                                       - torch.tensor([k_from_tv(float(t)) for t in tvs], dtype=torch.float64)).abs().max()),
        "kl_guarantee_violations": int(((torch.as_tensor(kl(h.p, q1)) > h.k + 1e-9)
                                        | (torch.as_tensor(kl(h.p, q2)) > h.k + 1e-9)).sum()),
        "k_max_kl_median": float(m.k.median()), "k_kl_median": float(torch.tensor([k_from_hellinger(float(x)) for x in h2s]).median()),
    }
    out["closed_form_max_error"] = max(out["max_kl_combiner_max_error"], out["kl_combiner_max_error"],
                                       out["max_kl_normaliser_vs_1_minus_tv_max_error"], out["kl_normaliser_vs_1_minus_h2_max_error"])
    # CP-k: exact distribution vs rejection sampling, and MC checks of p_k(E) <= 2^k_eff q_i(E) on random events
    p = torch.softmax(2 * torch.randn(20, vocab, generator=g, dtype=torch.float64), -1)
    p = 0.5 * p + 0.25 * q1[:20] + 0.25 * q2[:20]  # a "full model" near both shards
    errors, checks, violations, exact_violations, rates = [], 0, 0, 0, []
    for i in range(20):
        k = 1.0
        exact = cp_k(p[i], [q1[i], q2[i]], k)
        ys, rate = sample_cp_k(p[i], [q1[i], q2[i]], k, mc_samples, generator=g)
        freq = torch.bincount(ys, minlength=vocab).double() / mc_samples
        errors.append(float((freq - exact.p).abs().max()))
        rates.append((rate, float(exact.z)))
        for _ in range(50):
            event = torch.rand(vocab, generator=g) < 0.1
            hits = int(event[ys].sum())
            lo_p, _ = clopper_pearson(hits, mc_samples)
            for q in (q1[i], q2[i]):
                checks += 1
                violations += lo_p > event_bound_max_kl(float(q[event].sum().clamp(max=1)), float(exact.k))
                exact_violations += float(exact.p[event].sum()) > event_bound_max_kl(float(q[event].sum().clamp(max=1)), float(exact.k)) + 1e-12
    out["cp_k"] = {"k": 1.0, "mc_samples_per_prompt": mc_samples, "max_abs_freq_error": max(errors),
                   "acceptance_mc_vs_exact_max_error": max(abs(a - b) for a, b in rates),
                   "bound_checks": checks, "bound_violations_mc": violations, "bound_violations_exact": exact_violations}
    return out


def reproduction_report(res, cond_t, works, labels, names, clean, size) -> dict:
    """Reproduction rate of each protected work at its class: full model (first draws) vs CP-k, on the same seeds."""
    d_clean, _ = nn_distance(works, clean.images, size)
    delta = 0.5 * float(d_clean.min())
    rep = {"delta": delta, "distance": "RMS pixel distance" + (f", images pooled to {size}x{size}" if size else ", 16x16"),
           "delta_rule": "half the smallest distance from a protected work to a clean training image", "works": []}
    for j, (name, c) in enumerate(zip(names, labels.tolist())):
        mask = cond_t == c
        n = int(mask.sum())
        full = reproduction(res.first_images[mask], works[j : j + 1], delta, size)
        cpk = reproduction(res.images[mask], works[j : j + 1], delta, size)
        rep["works"].append({"work": name, "class": c, "samples": n, "full_hits": full["hits"], "cp_k_hits": cpk["hits"],
                             "full_rate": full["rate"], "cp_k_rate": cpk["rate"],
                             "full_median_distance": float(full["distances"].median()),
                             "cp_k_median_distance": float(cpk["distances"].median()),
                             "cp_k_rate_upper95": clopper_pearson(cpk["hits"], n)[1]})
    n = sum(w["samples"] for w in rep["works"])
    full_hits, cpk_hits = sum(w["full_hits"] for w in rep["works"]), sum(w["cp_k_hits"] for w in rep["works"])
    rep.update(samples=n, full_hits=full_hits, cp_k_hits=cpk_hits, full_rate=full_hits / n, cp_k_rate=cpk_hits / n,
               reduction=(full_hits / cpk_hits) if cpk_hits else None,  # None: CP-k reproduced nothing
               reduction_lower95=(full_hits / n) / clopper_pearson(cpk_hits, n)[1])
    return rep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protected", nargs="+", default=["mnist-test:364", "mnist-test:856"])
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.02)
    parser.add_argument("--threshold", type=float, default=0.03)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--per-class", type=int, default=40, help="CP-k samples per clean class (FD)")
    parser.add_argument("--per-protected-class", type=int, default=100, help="CP-k samples per protected class")
    parser.add_argument("--calibration-per-class", type=int, default=20)
    parser.add_argument("--safe-samples", type=int, default=100, help="safe-model samples per protected work (bound check)")
    parser.add_argument("--quantile", type=float, default=0.95)
    parser.add_argument("--models", default="", help="reuse trained models in this folder (full/, shard-0/, shard-1/)")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args()

    t_start = time.perf_counter()
    path = RESULTS / f"copyright{('-' + args.tag) if args.tag else ''}.json"
    report = {"machine": machine_info(), "args": vars(args), "targets": TARGETS,
              "likelihood": "per-step Gaussian log-ratio along the stochastic DDIM path (a proxy for image likelihoods)"}
    t0 = time.perf_counter()
    report["toy"] = toy(args.seed)
    report["toy"]["seconds"] = time.perf_counter() - t0
    print(f"toy: closed-form max error {report['toy']['closed_form_max_error']:.2e}, CP-k MC bound violations "
          f"{report['toy']['cp_k']['bound_violations_mc']}/{report['toy']['cp_k']['bound_checks']}", flush=True)
    save_json(report, path)

    # ---- data, shards, models
    work = Path(args.workdir or tempfile.mkdtemp(prefix="guardgen-naf-"))
    clean = load_mnist("train", 16)
    works, labels, names = load_protected(args.protected, 16)
    data = with_copies(clean, works, labels, copies=args.copies, noise=args.noise, seed=args.seed)
    t0 = time.perf_counter()
    plan = shard_dataset(data, works, threshold=args.threshold, seed=args.seed)
    shards = Shards(data, plan, works, labels, names)
    report["shards"] = {**plan.summary(), "seconds": time.perf_counter() - t0, "images": len(data)}
    models = Path(args.models) if args.models else work / "models"
    if not args.models:
        stamps = {}
        metrics = train_shard_models(shards, models, steps=args.steps, batch_size=args.batch_size,
                                     block_out_channels=tuple(args.channels), warmup=50, seed=args.seed, device=args.device,
                                     checkpoint_every=10**9, callback=lambda s, logs: stamps.setdefault(logs["model"], s))
        report["training"] = {k: {"train_seconds": v["train_seconds"], "images": v["train_images"], "steps": v["steps"],
                                  "params": v["params"]} for k, v in metrics.items()}
        print("trained:", {k: v["train_seconds"] for k, v in metrics.items()}, flush=True)
    save_json(report, path)
    p = load_model(str(models / "full"), device=args.device)
    qs = [load_model(str(models / f"shard-{i}"), device=args.device) for i in range(plan.n_shards)]
    oracle = load_model("zoo:mnist-oracle", kind="classifier", device=args.device)

    # ---- calibrate k on clean classes, then CP-k on every class
    protected_classes = sorted(set(labels.tolist()))
    clean_classes = [c for c in range(10) if c not in protected_classes]
    t0 = time.perf_counter()
    _, lr = sample_with_log_ratios(p, qs, [c for c in clean_classes for _ in range(args.calibration_per_class)],
                                   num_inference_steps=args.sample_steps, seed=args.seed + 99)
    k = calibrate_k(lr, args.quantile)
    report["calibration"] = {"clean_classes": clean_classes, "samples": len(lr), "quantile": args.quantile, "k": k,
                             "log_ratio_quantiles": {q: float(torch.quantile(lr.max(1).values, q)) for q in (0.05, 0.5, 0.95)},
                             "seconds": time.perf_counter() - t0}
    print(f"k = {k:.1f} bits ({args.quantile} quantile on clean classes)", flush=True)
    conditions = [c for c in range(10) for _ in range(args.per_protected_class if c in protected_classes else args.per_class)]
    t0 = time.perf_counter()
    res = CPk(k=k, num_inference_steps=args.sample_steps, seed=args.seed, max_draws_per_sample=200).sample(p, qs, conditions)
    cpk_seconds = time.perf_counter() - t0
    draws = len(res.draw_conditions)
    report["cp_k"] = {"k": k, "acceptance_rate": res.acceptance_rate, "k_effective": res.k_effective, "draws": draws,
                      "samples": len(conditions), "per_condition": res.per_condition, "seconds": cpk_seconds,
                      "cost_vs_full_sampling": draws / len(conditions) * (1 + len(qs))}
    save_json(report, path)

    # ---- reproduction of the protected works, full model (first draws, same seeds) vs CP-k
    cond_t = torch.tensor(conditions)
    report["reproduction"] = reproduction_report(res, cond_t, works, labels, names, clean, size=None)
    report["reproduction_pooled8"] = reproduction_report(res, cond_t, works, labels, names, clean, size=8)
    rep = report["reproduction"]
    delta = rep["delta"]
    print(f"reproduction: full {rep['full_rate']:.3f}, CP-k {rep['cp_k_rate']:.3f} (delta {delta:.3f})", flush=True)

    # ---- quality: FD on oracle features against the real test split
    real = load_mnist("test", 16)
    f_real = classifier_features(oracle, real.images)
    fd_full = fd_from_features(classifier_features(oracle, res.first_images), f_real)
    fd_cpk = fd_from_features(classifier_features(oracle, res.images), f_real)
    clean_mask = ~torch.isin(cond_t, torch.tensor(protected_classes))
    report["fd"] = {"full": fd_full, "cp_k": fd_cpk, "ratio": fd_cpk / fd_full, "features": "zoo:mnist-oracle",
                    "samples": len(conditions), "reference": "MNIST test split (1,000)",
                    "clean_classes_full": fd_from_features(classifier_features(oracle, res.first_images[clean_mask]), f_real),
                    "clean_classes_cp_k": fd_from_features(classifier_features(oracle, res.images[clean_mask]), f_real)}
    print(f"FD: full {fd_full:.3f}, CP-k {fd_cpk:.3f} ({fd_cpk / fd_full:.3f}x)", flush=True)
    save_json(report, path)

    # ---- Monte-Carlo check of p_k(E) <= 2^k_eff(x) safe_C(E|x), E = "reproduces C"
    checks = []
    for j, (name, c) in enumerate(zip(names, labels.tolist())):
        safe = qs[shards.safe_shard(j)]
        xs, _ = sample_with_log_ratios(safe, [], [c] * args.safe_samples, num_inference_steps=args.sample_steps,
                                       seed=args.seed + 7 + j)
        q_hits = int((nn_distance(xs, works[j : j + 1])[0] < delta).sum())
        mask = cond_t == c
        p_hits = int((nn_distance(res.images[mask], works[j : j + 1])[0] < delta).sum())
        n = int(mask.sum())
        k_x = res.per_condition[str(c)]["k_effective"]
        p_lo, _ = clopper_pearson(p_hits, n)
        _, q_hi = clopper_pearson(q_hits, args.safe_samples)
        bound = 1.0 if k_x > 1000 else min(1.0, 2.0**k_x * q_hi)
        checks.append({"work": name, "class": c, "safe_model": f"shard-{shards.safe_shard(j)}", "k_effective_x": k_x,
                       "p_k_event": p_hits / n, "p_k_event_lower95": p_lo, "safe_event": q_hits / args.safe_samples,
                       "safe_event_upper95": q_hi, "bound_2^k_q_upper95": bound, "violated": p_lo > bound,
                       "vacuous": bound >= 1.0})
    report["bound_checks"] = {"checks": checks, "violations": sum(c["violated"] for c in checks),
                              "note": "E = RMS distance to the protected work < delta; bound uses the path log-ratio proxy"}
    report["grids"] = str(RESULTS / f"copyright{('-' + args.tag) if args.tag else ''}-grid.png")
    keep = torch.isin(cond_t, torch.tensor(protected_classes))
    save_grid(torch.cat([res.first_images[keep][:40], res.images[keep][:40]]), report["grids"], nrow=20)
    report["total_seconds"] = time.perf_counter() - t_start
    save_json(report, path)
    write_markdown(report, path.with_suffix(".md"))
    print(path.with_suffix(".md").read_text())


def write_markdown(r: dict, path: Path) -> None:
    rep, fd, cpk, toy_ = r["reproduction"], r["fd"], r["cp_k"], r["toy"]
    red = "∞ (CP-k: 0 hits)" if rep["reduction"] is None else f"{rep['reduction']:.1f}x"
    pooled = r["reproduction_pooled8"]
    lines = [
        f"### NAF / CP-k on the zoo ({r['machine']['cpu_count']} CPU cores, {r['total_seconds'] / 60:.1f} min)", "",
        f"{len(rep['works'])} protected MNIST test digits, {r['args']['copies']} noisy copies each; "
        f"full model + 2 shard models, mnist-ddpm loop, {r['args']['steps']} steps each. "
        f"Likelihood: {r['likelihood']}.", "",
        "| figure | value | target |", "|---|---|---|",
        f"| reproduction rate, full model (delta {rep['delta']:.3f}) | {rep['full_rate']:.3f} ({rep['full_hits']}/{rep['samples']}) | (reproduces) |",
        f"| reproduction rate, CP-k | {rep['cp_k_rate']:.3f} ({rep['cp_k_hits']}/{rep['samples']}) | |",
        f"| reduction (95% lower bound) | {red} ({rep['reduction_lower95']:.1f}x) | >= 10x |",
        f"| same, distance on 8x8-pooled images: full / CP-k | {pooled['full_rate']:.3f} / {pooled['cp_k_rate']:.3f} | |",
        f"| FD full / CP-k (ratio) | {fd['full']:.3f} / {fd['cp_k']:.3f} ({fd['ratio']:.3f}x) | <= 1.2x |",
        f"| k (bits, {r['calibration']['quantile']} quantile, clean classes) | {cpk['k']:.1f} | |",
        f"| acceptance rate / k + log2(1/ν) | {cpk['acceptance_rate']:.3f} / {cpk['k_effective']:.1f} | |",
        f"| CP-k sampling cost (UNet calls vs plain sampling) | {cpk['cost_vs_full_sampling']:.2f}x | |",
        f"| Monte-Carlo bound violations (diffusion) | {r['bound_checks']['violations']} of {len(r['bound_checks']['checks'])} "
        f"({sum(c['vacuous'] for c in r['bound_checks']['checks'])} vacuous) | 0 |",
        f"| CP-Δ closed-form max error (toy) | {toy_['closed_form_max_error']:.1e} | <= 1e-6 |",
        f"| CP-k toy: MC bound violations / exact | {toy_['cp_k']['bound_violations_mc']} / "
        f"{toy_['cp_k']['bound_violations_exact']} of {toy_['cp_k']['bound_checks']} | 0 |", "",
        "| protected work | class | samples | full rate | CP-k rate | acceptance at class |", "|---|---|---|---|---|---|",
    ]
    for w in rep["works"]:
        lines.append(f"| {w['work']} | {w['class']} | {w['samples']} | {w['full_rate']:.3f} | {w['cp_k_rate']:.3f} | "
                     f"{cpk['per_condition'][str(w['class'])]['acceptance']:.3f} |")
    lines.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(int(os.environ.get("GUARDGEN_THREADS", "1")))
    main()
