"""Benchmark the audit report: time per section at default budgets, and a sanity table of what it tells apart.

    OMP_NUM_THREADS=1 python -m bench.audit              # CPU, one torch thread (a few minutes)

1. zoo:mnist-ddpm, default budgets (--concept 7): the time of every section; target: whole audit <= 300 s.
2. an SFD run that forgot 7 (-> 1), made here (30 iterations): leakage must tell it from its original.
3. a memorizing model, made here with the zoo's DDPM training recipe: a class-conditional UNet trained on
   20 MNIST images (2 per class), each duplicated 20 times; memorization (extraction rate, calibrated l2)
   and membership (AUROC) must tell it from the zoo model. Its members are its 20 training images,
   its non-members the MNIST test split.
Writes bench/results/audit-cpu[-TAG].json and .md; the full reports go to runs/bench-audit/.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from guardgen.audit import AuditConfig, run_audit, write_report
from guardgen.checkpoint import atomic_path, save_json
from guardgen.utils import machine_info, seed_everything

RESULTS = Path(__file__).parent / "results"
RUNS = Path(__file__).resolve().parents[1] / "runs" / "bench-audit"
TARGET_SECONDS = 300.0


def make_unlearned_run(out: Path, iterations: int, seed: int) -> float:
    """`guardgen unlearn concept --model zoo:mnist-ddpm --forget 7 --override 1 --method sfd` (no evaluation)."""
    from typer.testing import CliRunner

    from guardgen.cli import app

    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["unlearn", "concept", "--model", "zoo:mnist-ddpm", "--forget", "7", "--override", "1",
                                      "--method", "sfd", "--iterations", str(iterations), "--no-evaluate", "--device", "cpu",
                                      "--seed", str(seed), "--out", str(out)])
    if result.exit_code != 0:
        raise RuntimeError(result.output)
    return time.perf_counter() - t0


def make_memorizing_model(out: Path, *, per_class: int, copies: int, steps: int, seed: int) -> dict:
    """The zoo's DDPM recipe (guardgen/zoo/ddpm.py: eps-prediction, linear 1000-step schedule, AdamW, cosine lr,
    label dropout, EMA, DDIM sampler) on a few duplicated MNIST images, with a smaller UNet; saves the
    pipeline and the unique images as PNGs."""
    from diffusers import DDIMScheduler, DDPMScheduler
    from diffusers.training_utils import EMAModel

    from guardgen.audit.subject import load_data
    from guardgen.data import write_image_set
    from guardgen.data.transforms import to_model_range
    from guardgen.models.diffusion import class_conditional_unet, save_pipeline
    from guardgen.models.pipelines import ClassConditionalPipeline
    from guardgen.zoo._loop import batch_indices, cosine_lr, step_generator

    seed_everything(seed)
    train, _, _ = load_data("mnist", (1, 16, 16))
    pick = torch.cat([torch.nonzero(train.labels == c).flatten()[:per_class] for c in range(10)])
    few = train.subset(pick)
    write_image_set(few.images, out / "train-images", labels=few.labels)
    x_all, y_all = to_model_range(few.images).repeat(copies, 1, 1, 1), few.labels.repeat(copies)
    unet = class_conditional_unet(resolution=16, block_out_channels=(16, 32, 32))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    abar = sched.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=2e-3, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=0.998, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4)
    t0 = time.perf_counter()
    unet.train()
    for step in range(steps):
        idx = batch_indices(len(x_all), 32, step, seed)
        g = step_generator(seed, step)
        x0, labels = x_all[idx], y_all[idx].clone()
        labels[torch.rand(len(idx), generator=g) < 0.1] = 10
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (len(idx),), generator=g)
        a = abar[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, class_labels=labels).sample, noise)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, 2e-3, warmup=50)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
    ema.copy_to(unet.parameters())
    unet.eval()
    pipe = ClassConditionalPipeline(unet=unet, scheduler=DDIMScheduler.from_config(sched.config, clip_sample=True), num_classes=10)
    save_pipeline(pipe, out / "model")
    return {"train_seconds": round(time.perf_counter() - t0, 2), "steps": steps, "unique_images": len(few),
            "copies": copies, "final_loss": float(loss.detach())}


def audit(spec: str, out: Path, config: AuditConfig, **kwargs) -> dict:
    report, sections = run_audit(spec, config=config, command=f"bench/audit.py: {spec}", **kwargs)
    write_report(report, sections, out)
    return report


def summary(report: dict) -> dict:
    s = report["sections"]
    mem, mia, q = s["memorization"]["figures"], s["membership"]["figures"], s["quality"]["figures"]
    return {
        "overall": report["verdicts"]["overall"],
        "verdicts": {k: v["status"] for k, v in report["verdicts"]["sections"].items()},
        "seconds": report["seconds"], "timings": report["timings"], "cpu_seconds": report["cpu_seconds"],
        "fd_oracle": q.get("fd_oracle"), "fd_real_split": q.get("fd_real_split"), "conditional_accuracy": q.get("conditional_accuracy"),
        "extraction_rate": mem.get("extraction_rate"), "holdout_extraction_rate": mem.get("holdout_extraction_rate"),
        "calibrated_l2_median": mem.get("calibrated_l2_median"), "nn_l2_median": mem.get("nn_l2_median"),
        "auth_pct": mem.get("auth_pct"), "ct_score": mem.get("ct_score"),
        "mia_auroc": mia.get("auroc"), "mia_tpr_at_1pct_fpr": mia.get("tpr_at_1pct_fpr"), "mia_attacks": mia.get("attacks"),
        "leakage": [{k: c.get(k) for k in ("concept", "audited", "original", "reduction", "fisher_p")}
                    for c in s["leakage"]["figures"].get("concepts", [])],
    }


def markdown(result: dict) -> str:
    z, u, m = result["zoo"], result["unlearned"], result["memorizing"]
    lines = ["# Audit benchmark (CPU)", "", f"{result['machine']['platform']}, {result['machine']['cpu_count']} cores, "
             f"torch threads {result['machine']['torch_threads']}; seed {result['seed']}", "",
             "## Time per section, zoo:mnist-ddpm at default budgets", "", "| section | wall s | CPU s |", "|---|---|---|"]
    for k, v in z["timings"].items():
        cpu = z["cpu_seconds"].get(k)
        lines.append(f"| {k} | {v:.1f} | {'n/a' if cpu is None else f'{cpu:.1f}'} |")
    lines += [f"| **whole audit** | **{z['seconds']:.1f}** (target <= {TARGET_SECONDS:.0f}) | |", "",
              "## Sanity: memorizing model vs zoo model", "", "| figure | zoo:mnist-ddpm | memorizing (20 images x 20) |", "|---|---|---|"]
    for key in ("extraction_rate", "holdout_extraction_rate", "calibrated_l2_median", "nn_l2_median", "auth_pct", "ct_score",
                "mia_auroc", "mia_tpr_at_1pct_fpr", "overall"):
        lines.append(f"| {key} | {_f(z[key])} | {_f(m[key])} |")
    for attack in m["mia_attacks"]:
        lines.append(f"| AUROC {attack} | {_f(z['mia_attacks'].get(attack, {}).get('auroc'))} | {_f(m['mia_attacks'][attack]['auroc'])} |")
    lines += ["", "## Sanity: unlearned run vs its original (leakage of class 7)", "",
              "| concept | forget rate, SFD run | forget rate, original | Fisher p | verdict |", "|---|---|---|---|---|"]
    for c in u["leakage"]:
        lines.append(f"| {c['concept']} | {_f(c['audited']['forget_rate'])} | {_f(c['original']['forget_rate'])} | "
                     f"{_f(c['fisher_p'])} | {u['verdicts'].get('leakage')} |")
    lines += ["", f"Checks: {result['checks']}", ""]
    return "\n".join(lines)


def _f(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sfd-iterations", type=int, default=30)
    parser.add_argument("--memorize-steps", type=int, default=1000)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    RUNS.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    config = AuditConfig(seed=args.seed)

    zoo = audit("zoo:mnist-ddpm", RUNS / "report-zoo-ddpm", config, concepts=["7"])
    sfd_seconds = make_unlearned_run(RUNS / "sfd-7", args.sfd_iterations, args.seed)
    unlearned = audit(str(RUNS / "sfd-7"), RUNS / "report-sfd-7", AuditConfig(seed=args.seed))
    mem_info = make_memorizing_model(RUNS / "memorizing", per_class=2, copies=20, steps=args.memorize_steps, seed=args.seed)
    memorizing = audit(str(RUNS / "memorizing" / "model"), RUNS / "report-memorizing", AuditConfig(seed=args.seed),
                       train_data=str(RUNS / "memorizing" / "train-images"), holdout_data="mnist")

    z, u, m = summary(zoo), summary(unlearned), summary(memorizing)
    leak = u["leakage"][0]
    checks = {
        "zoo_audit_within_300s": z["seconds"] <= TARGET_SECONDS,
        "memorization_tells_memorizing_from_zoo": (m["extraction_rate"] >= 0.1 and z["extraction_rate"] <= 0.01
                                                   and m["verdicts"]["memorization"] == "fail" and z["verdicts"]["memorization"] == "pass"),
        "membership_tells_memorizing_from_zoo": m["mia_auroc"] > z["mia_auroc"] + 0.2,
        "leakage_tells_unlearned_from_original": leak["audited"]["forget_rate"] < leak["original"]["forget_rate"] and leak["fisher_p"] < 0.01,
    }
    result = {"seed": args.seed, "machine": machine_info(), "config": config.to_dict(), "target_seconds": TARGET_SECONDS,
              "zoo": z, "unlearned": {**u, "sfd_iterations": args.sfd_iterations, "sfd_seconds": round(sfd_seconds, 2)},
              "memorizing": {**m, "model": mem_info}, "checks": checks, "bench_seconds": round(time.perf_counter() - t_all, 2)}
    name = f"audit-cpu{'-' + args.tag if args.tag else ''}"
    save_json(result, RESULTS / f"{name}.json")
    with atomic_path(RESULTS / f"{name}.md") as tmp:
        tmp.write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
