"""Benchmark latent-space evasion of forensic detectors on the zoo: white-box, transfer (single / ensemble / meta), OMAT.

    python -m bench.latent_evasion                              # CPU, about 8 minutes on 2 idle cores
    python -m bench.latent_evasion --tag cpu-rotate --rotate --stages transfer --reuse   # every detector held out (~20 min)

Detectors: five backbones of different families (guardgen_digitnet, timm test_resnet, test_convnext at 32 px:
the 16 px images are resized for it, test_efficientnet, test_nfnet), each trained through ``guardgen detect train``
on MNIST train reals vs fakes of two zoo GANs of different architectures (mnist-gan: DCGAN, mnist-gan-resnet:
SNGAN-style), as the paper trains each forensic classifier on real vs the attacked generator's fakes. (timm's
test_vit was tried and dropped: it stays near chance on 16 px digits at this training budget.)
Both GANs are attacked in z; the attribute classifier is zoo:mnist-oracle, asked for digit i % 10 on image i.

Figures (targets of issue 9):
- white-box: success (p_fake < 0.5) and attribute fidelity (the oracle still sees the asked digit) per
  detector and GAN at the default budget (LatentEvasion() defaults: 60 steps per start, up to 2 restarts for
  the images a run leaves unsuccessful; the mean steps spent per image are reported), each >= 0.9;
- transfer (on mnist-gan-resnet, whose clean fakes every detector catches, so black-box success measures the
  attack rather than the detector's misses): test_efficientnet is the held-out black box (fixed before running),
  the other four are white-box. Black-box success of single (mean over the four single white-box choices),
  ensemble and meta, over seeds; ``--rotate`` holds out every detector in turn (extra, slower);
- OMAT: a digitnet detector adversarially trained against latent attacks on mnist-gan-resnet (``OMAT(gans=...)``),
  beside the standard detector and a control trained for the same extra epochs without the pool: success of
  a fresh white-box attack at several budgets, and clean accuracy.
Writes bench/results/latent_evasion-TAG.json (after every stage) and a markdown table beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

if not __package__:  # as a file, bench/ comes first on sys.path and bench/detectors.py shadows the package
    raise SystemExit("run it from the repository root as a module: python -m bench.latent_evasion")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attacks.latent_evasion import LatentEvasion, detector_scores, detector_views  # noqa: E402
from detectors.detector import Detector  # noqa: E402
from detectors.omat import OMAT  # noqa: E402
from guardgen.checkpoint import save_json  # noqa: E402
from guardgen.data import load_mnist  # noqa: E402
from guardgen.models import load_model  # noqa: E402
from guardgen.models.gan import sample_gan  # noqa: E402
from guardgen.utils import machine_info, seed_everything  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TRAIN_GANS = ("mnist-gan", "mnist-gan-resnet")
TRANSFER_GAN = "mnist-gan-resnet"
BACKBONES = {  # name -> extra `detect train` options
    "digitnet": ["--backbone", "guardgen_digitnet", "--model-arg", "width=16"],
    "resnet": ["--backbone", "test_resnet"],
    "convnext": ["--backbone", "test_convnext", "--input-size", "32"],
    "efficientnet": ["--backbone", "test_efficientnet"],
    "nfnet": ["--backbone", "test_nfnet"],
}
HELD_OUT = "efficientnet"
TARGETS = {"white_box_success": ">= 0.9 per detector", "attribute_fidelity": ">= 0.9 per detector",
           "black_box_order": "meta >= ensemble >= single (held-out detector)"}


def train_detectors(folder: Path, args) -> dict:
    """Each backbone through `guardgen detect train` (in process); returns {name: Detector}."""
    from typer.testing import CliRunner

    from guardgen.cli import app

    runner, out = CliRunner(), {}
    fakes = [a for g in TRAIN_GANS for a in ("--fake", f"zoo:{g}")]
    for name, opts in BACKBONES.items():
        cmd = ["detect", "train", "--real", "mnist:train", *fakes, "--n", str(args.n_fake), "--epochs", str(args.epochs),
               "--lr", "2e-3", "--device", "cpu", "--seed", str(args.seed), "--out", str(folder / name), *opts]
        r = runner.invoke(app, cmd)
        if r.exit_code != 0:
            raise SystemExit(f"detect train {name} failed:\n{r.output}")
        out[name] = Detector.from_pretrained(folder / name)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-fake", type=int, default=1600, help="training fakes per GAN")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-white", type=int, default=50, help="images per white-box attack")
    ap.add_argument("--n-transfer", type=int, default=30, help="images per transfer attack")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the transfer attacks")
    ap.add_argument("--transfer-steps", type=int, default=0, help="attack steps of the transfer runs (0: the default budget)")
    ap.add_argument("--meta-inner-lr", type=float, default=0.0, help="meta mode's virtual step (0: LatentEvasion's default)")
    ap.add_argument("--rotate", action=argparse.BooleanOptionalAction, default=False, help="hold out every detector in turn")
    ap.add_argument("--omat-epochs", type=int, default=3)
    ap.add_argument("--omat-pool", type=int, default=256)
    ap.add_argument("--omat-refresh", type=int, default=128)
    ap.add_argument("--work", default="/tmp/guardgen-bench-latent-evasion", help="where the detector folders go")
    ap.add_argument("--reuse", action="store_true", help="load detectors already trained in --work instead of training")
    ap.add_argument("--stages", default="white,transfer,omat", help="comma-separated subset of white,transfer,omat")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seed_everything(args.seed)
    t_start = time.perf_counter()
    out_path = RESULTS / f"latent_evasion-{args.tag}.json"
    res: dict = {"config": vars(args), "machine": machine_info(), "targets": TARGETS, "stages": {},
                 "attack_defaults": LatentEvasion().config()}

    def stage(name: str, t0: float) -> None:
        res["stages"][name] = round(time.perf_counter() - t0, 1)
        res["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        save_json(res, out_path)

    # ---------------------------------------------------------------- detectors (through the CLI)
    t0 = time.perf_counter()
    stages = set(args.stages.split(","))
    done = all((Path(args.work) / n / "model.safetensors").is_file() for n in BACKBONES)
    dets = ({n: Detector.from_pretrained(Path(args.work) / n) for n in BACKBONES} if args.reuse and done
            else train_detectors(Path(args.work), args))
    gans = {g: load_model(f"zoo:{g}")[0] for g in TRAIN_GANS}
    gen = gans[TRANSFER_GAN]
    oracle = load_model("zoo:mnist-oracle")
    real_test = load_mnist("test", 16).images
    fake_test = {g: sample_gan(m, 500, generator_rng=torch.Generator().manual_seed(args.seed + 999)) for g, m in gans.items()}
    res["detectors"] = {n: {"backbone": d.backbone, "input_size": d.input_size, "train_seconds": round(d.train_seconds_, 1),
                            "params": sum(p.numel() for p in d.module_.parameters()),
                            "clean_acc_real": float((d.predict_proba(real_test) <= 0.5).float().mean()),
                            **{f"clean_acc_fake_{g}": float((d.predict_proba(x) > 0.5).float().mean()) for g, x in fake_test.items()}}
                        for n, d in dets.items()}
    stage("train_detectors", t0)

    # ---------------------------------------------------------------- white-box, default budget
    t0 = time.perf_counter()
    targets = torch.arange(args.n_white) % 10
    res["white_box"], res["verdicts"] = {}, {}
    for g, model in (gans.items() if "white" in stages else []):
        res["white_box"][g] = {}
        for name, det in dets.items():
            r = LatentEvasion(seed=args.seed).attack(model, [det], args.n_white, classifier=oracle, target=targets, names=[name])
            s = r.summary()
            caught = r.score_before[:, 0] >= 0.5
            res["white_box"][g][name] = {
                "success": s["success_per_detector"][name], "attribute_fidelity": s["attribute_fidelity"],
                "success_and_attribute": float((r.success[:, 0] & r.attribute_after).float().mean()),
                "clean_caught": float(caught.float().mean()),
                "success_on_caught": float(r.success[caught, 0].float().mean()) if caught.any() else float("nan"),
                "attribute_fidelity_start": s["attribute_fidelity_before"], "p_fake_before": s["p_fake_before"][name],
                "p_fake_after": s["p_fake_after"][name], "mean_drift": s["mean_drift"], "mean_steps_used": s["mean_steps_used"],
                "seconds": s["seconds"], "notes": r.notes}
        stage(f"white_box_{g}", t0)
    rows = [v for per in res["white_box"].values() for v in per.values()]
    if rows:
        res["white_box_min"] = {"success": min(v["success"] for v in rows), "attribute_fidelity": min(v["attribute_fidelity"] for v in rows),
                                "success_on_caught": min(v["success_on_caught"] for v in rows)}
        res["verdicts"] = {"white_box_success": res["white_box_min"]["success"] >= 0.9,
                           "attribute_fidelity": res["white_box_min"]["attribute_fidelity"] >= 0.9}
        stage("white_box", t0)

    # ---------------------------------------------------------------- transfer to a held-out detector
    t0 = time.perf_counter()
    holdouts = list(dets) if args.rotate else [HELD_OUT]
    transfer = {}
    for held in ([HELD_OUT] + [h for h in holdouts if h != HELD_OUT] if "transfer" in stages else []):
        white = [n for n in dets if n != held]
        rows = {"single": [], "ensemble": [], "meta": [], "clean": [], "fidelity": {"single": [], "ensemble": [], "meta": []},
                "white_box_success": {"single": [], "ensemble": [], "meta": []}}
        hview, _ = detector_views([dets[held]], (1, 16, 16), [held])
        for s in range(args.seeds):
            tg = torch.arange(args.n_transfer) % 10
            runs = {"ensemble": [white], "meta": [white], "single": [[w] for w in white]}
            for mode, groups in runs.items():
                succ, fid, wsucc = [], [], []
                for group in groups:
                    budget = {"steps": args.transfer_steps} if args.transfer_steps else {}
                    if mode == "meta" and args.meta_inner_lr:
                        budget["inner_lr"] = args.meta_inner_lr
                    r = LatentEvasion(mode=mode, seed=args.seed + 100 * s, **budget).attack(
                        gen, [dets[w] for w in group], args.n_transfer, classifier=oracle, target=tg, names=group)
                    p = detector_scores(hview, r.images)[:, 0]
                    succ.append(float((p < 0.5).float().mean()))
                    fid.append(float(r.attribute_after.float().mean()))
                    wsucc.append(float(r.success.all(1).float().mean()))
                    if mode == "ensemble":
                        rows["clean"].append(float((detector_scores(hview, r.clean)[:, 0] < 0.5).float().mean()))
                rows[mode].append(float(np.mean(succ)))
                rows["fidelity"][mode].append(float(np.mean(fid)))
                rows["white_box_success"][mode].append(float(np.mean(wsucc)))
        summary = {m: {"mean": float(np.mean(rows[m])), "std": float(np.std(rows[m])), "per_seed": rows[m]}
                   for m in ("single", "ensemble", "meta", "clean")}
        summary["attribute_fidelity"] = {m: float(np.mean(v)) for m, v in rows["fidelity"].items()}
        summary["white_box_success"] = {m: float(np.mean(v)) for m, v in rows["white_box_success"].items()}
        summary["order_met"] = summary["meta"]["mean"] >= summary["ensemble"]["mean"] >= summary["single"]["mean"]
        transfer[held] = summary
        res["transfer"] = transfer
        stage(f"transfer_{held}", t0)
    if transfer:
        res["verdicts"]["black_box_order"] = transfer[HELD_OUT]["order_met"]
    if len(transfer) > 1:
        res["transfer_mean_over_holdouts"] = {m: float(np.mean([t[m]["mean"] for t in transfer.values()]))
                                              for m in ("clean", "single", "ensemble", "meta")}
    stage("transfer", t0)
    if "omat" in stages:
        omat_stage(res, args, dets, gen, oracle, real_test, fake_test, gans, stage)
    res["markdown"] = markdown(res)
    save_json(res, out_path)
    (RESULTS / f"latent_evasion-{args.tag}.md").write_text(res["markdown"])
    print(res["markdown"])


def omat_stage(res, args, dets, gen, oracle, real_test, fake_test, gans, stage) -> None:
    """OMAT against latent attacks (digitnet) beside the standard detector and a same-epochs control."""
    t0 = time.perf_counter()
    real_tr = load_mnist("train", 16).images
    fake_tr = torch.cat([sample_gan(m, args.n_fake, generator_rng=torch.Generator().manual_seed(args.seed + 7 + i))
                         for i, m in enumerate(gans.values())])
    standard = dets["digitnet"]
    control = standard.clone()
    control.warm_start, control.epochs = True, args.omat_epochs
    control.fit(real_tr, fake_tr)
    omat = OMAT(detector={"backbone": "guardgen_digitnet", "model_args": {"width": 16}, "device": "cpu"}, epochs=args.omat_epochs,
                pool_size=args.omat_pool, refresh_every=1, refresh_size=args.omat_refresh, pool_repeat=2, seed=args.seed,
                latent_attack={"steps": 30, "early_stop": True, "candidates": 1})
    omat.fit(real_tr, fake_tr, gans=[gen], base=standard)
    res["omat_train"] = {"seconds": round(omat.train_seconds_, 1), "pool": len(omat.pool_), "attack_log": omat.attack_log_}
    stage("omat_train", t0)
    t0 = time.perf_counter()
    trio = {"standard": standard, "standard+epochs": control, "omat": omat.detector_}
    res["omat"] = {}
    for name, det in trio.items():
        row = {"clean_acc_real": float((det.predict_proba(real_test) <= 0.5).float().mean()),
               "clean_acc_fake": float((det.predict_proba(fake_test[TRANSFER_GAN]) > 0.5).float().mean())}
        for steps in (10, 30, 60):
            r = LatentEvasion(steps=steps, seed=args.seed + 555).attack(gen, [det], args.n_white, classifier=oracle,
                                                                       target=torch.arange(args.n_white) % 10, names=[name])
            row[f"success_{steps}_steps"] = float(r.success[:, 0].float().mean())
            row[f"success_and_attribute_{steps}_steps"] = float((r.success[:, 0] & r.attribute_after).float().mean())
            row[f"p_fake_after_{steps}_steps"] = float(r.score_after[:, 0].mean())
        row["clean_called_real"] = float((r.score_before[:, 0] < 0.5).float().mean())
        res["omat"][name] = row
    stage("omat_attack", t0)


def markdown(res: dict) -> str:
    cfg, c = res["attack_defaults"], res["config"]
    lines = ["## Detectors (trained through `guardgen detect train`; clean accuracy at p_fake 0.5)", "",
             "| detector | backbone | params | real | " + " | ".join(f"fake {g}" for g in TRAIN_GANS) + " |",
             "|---|---|---|---|" + "---|" * len(TRAIN_GANS)]
    for n, d in res["detectors"].items():
        lines.append(f"| {n} | {d['backbone']} ({d['input_size']} px) | {d['params']} | {d['clean_acc_real']:.3f} | "
                     + " | ".join(f"{d[f'clean_acc_fake_{g}']:.3f}" for g in TRAIN_GANS) + " |")
    if res["white_box"]:
        lines += white_box_markdown(res, cfg, c)
    if res.get("transfer"):
        lines += transfer_markdown(res, c)
    if res.get("omat"):
        lines += omat_markdown(res)
    lines += ["", f"Wall time {res['wall_seconds']:.0f} s; stages: {res['stages']}.", ""]
    return "\n".join(lines)


def white_box_markdown(res, cfg, c) -> list[str]:
    lines = ["", f"## White-box latent evasion (z), LatentEvasion defaults ({cfg['steps']} Adam steps per start, up to "
              f"{cfg.get('restarts', 0)} restarts, lr {cfg['lr']}, reg {cfg['reg_weight']}), {c['n_white']} images, oracle asked "
              "for digit i % 10", "",
              "| GAN | detector | clean caught | success | success on caught | attribute fidelity | both | p_fake before -> after | drift "
              "| steps per image |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for g, per in res["white_box"].items():
        for n, w in per.items():
            lines.append(f"| {g} | {n} | {w['clean_caught']:.3f} | {w['success']:.3f} | {w['success_on_caught']:.3f} | "
                         f"{w['attribute_fidelity']:.3f} | {w['success_and_attribute']:.3f} | {w['p_fake_before']:.3f} -> "
                         f"{w['p_fake_after']:.3f} | {w['mean_drift']:.3f} | {w.get('mean_steps_used', float('nan')):.1f} |")
    m, v = res["white_box_min"], res["verdicts"]
    lines += ["", f"Minimum over GANs and detectors: success {m['success']:.3f}, attribute fidelity {m['attribute_fidelity']:.3f} "
              f"(targets >= 0.9 each: {'met' if v['white_box_success'] and v['attribute_fidelity'] else 'not met'})."]
    return lines


def transfer_markdown(res, c) -> list[str]:
    lines = ["", f"## Transfer to a held-out detector ({TRANSFER_GAN}; {c.get('transfer_steps') or res['attack_defaults']['steps']} "
             f"steps; {c['seeds']} seeds x {c['n_transfer']} images; "
              "black-box success, mean +- std over seeds)", "",
              "| held out | clean | single (mean of 4) | ensemble (4) | meta (4) | meta >= ens >= single | white-box success s/e/m | fidelity s/e/m |",
              "|---|---|---|---|---|---|---|---|"]
    for held, t in res["transfer"].items():
        f, w = t["attribute_fidelity"], t["white_box_success"]
        lines.append(f"| {held}{' (named)' if held == HELD_OUT else ''} | {t['clean']['mean']:.3f} | {t['single']['mean']:.3f} +- {t['single']['std']:.3f} | "
                     f"{t['ensemble']['mean']:.3f} +- {t['ensemble']['std']:.3f} | {t['meta']['mean']:.3f} +- {t['meta']['std']:.3f} | "
                     f"{_order(t)} | {w['single']:.2f}/{w['ensemble']:.2f}/{w['meta']:.2f} | "
                     f"{f['single']:.2f}/{f['ensemble']:.2f}/{f['meta']:.2f} |")
    if "transfer_mean_over_holdouts" in res:
        a = res["transfer_mean_over_holdouts"]
        lines.append(f"| mean | {a['clean']:.3f} | {a['single']:.3f} | {a['ensemble']:.3f} | {a['meta']:.3f} | | | |")
    return lines


def _order(t: dict) -> str:
    """'yes' / 'no', saying when meta and ensemble tie (same count of fooled images)."""
    tie = abs(t["meta"]["mean"] - t["ensemble"]["mean"]) < 1e-6
    return ("yes" if t["order_met"] else "no") + (" (meta = ensemble: a tie)" if tie else "")


def omat_markdown(res) -> list[str]:
    lines = ["", f"## OMAT against latent attacks (digitnet, {TRANSFER_GAN}): white-box success of a fresh attack "
             f"(budgets per start, up to {res['attack_defaults'].get('restarts', 0)} restarts)", "",
              "| detector | clean acc real / fake | success 10 / 30 / 60 steps | success with attribute, 60 steps | p_fake after 60 |",
              "|---|---|---|---|---|"]
    for n, o in res["omat"].items():
        lines.append(f"| {n} | {o['clean_acc_real']:.3f} / {o['clean_acc_fake']:.3f} | {o['success_10_steps']:.3f} / {o['success_30_steps']:.3f} / "
                     f"{o['success_60_steps']:.3f} | {o['success_and_attribute_60_steps']:.3f} | {o['p_fake_after_60_steps']:.3f} |")
    return lines


if __name__ == "__main__":
    main()
