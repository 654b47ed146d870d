"""Benchmark the zoo: build time on this machine, parameter count, quality; 1 vs 2 process training.

    python -m bench.zoo                     # everything (the DDPM build takes ~20-40 min on 2 CPU cores)
    python -m bench.zoo --ddpm-build shipped  # DDPM build time from the shipped model's build record
    python -m bench.zoo --device cuda --mixed-precision bf16   # on a GPU

Writes bench/results/zoo[-TAG].json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from guardgen import zoo
from guardgen.checkpoint import load_json, save_json
from guardgen.data import load_mnist
from guardgen.metrics import fd_from_features
from guardgen.models import load_model
from guardgen.models.classifier import classifier_features
from guardgen.utils import machine_info, predict_logits
from guardgen.zoo.ddpm import evaluate_class_conditional

RESULTS = Path(__file__).parent / "results"


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_oracle(work: Path, device: str, mixed_precision: str, processes: int) -> dict:
    out = work / f"oracle-{processes}p"
    t0 = time.perf_counter()
    if processes == 1:
        metrics = zoo.build("mnist-oracle", out, device=device, mixed_precision=mixed_precision)
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "guardgen.cli",
               "zoo", "build", "mnist-oracle", "--out", str(out), "--device", device, "--mixed-precision", mixed_precision]
        subprocess.run(cmd, check=True, capture_output=True)
        metrics = load_json(out / "results.json")
    return {**metrics, "build_wall_seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--ddpm-build", choices=["run", "shipped", "skip"], default="run")
    parser.add_argument("--ddpm-steps", type=int, default=None, help="override the DDPM's training steps")
    parser.add_argument("--eval-per-class", type=int, default=100)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="guardgen-bench-"))
    oracle = load_model("zoo:mnist-oracle", kind="classifier", device=args.device)
    test = load_mnist("test")
    train = load_mnist("train")
    report: dict = {"machine": machine_info(), "args": vars(args), "models": {}}

    # --- mnist-oracle: build (1 process and 2 processes), size, accuracy --------------------------------
    one = build_oracle(work, args.device, args.mixed_precision, 1)
    two = build_oracle(work, args.device, args.mixed_precision, 2) if args.device == "cpu" or torch.cuda.device_count() > 1 else None
    shipped_acc = float((predict_logits(oracle, test.images).argmax(1) == test.labels).float().mean())
    report["models"]["mnist-oracle"] = {
        "params": params(oracle),
        "build_seconds": one["build_wall_seconds"],
        "train_seconds": one["train_seconds"],
        "test_accuracy_rebuilt": one["test_accuracy"],
        "test_accuracy_shipped": shipped_acc,
        "target_test_accuracy": 0.97,
    }
    report["processes"] = {"1": one, "2": two}

    # --- mnist-ddpm: build, size, conditional accuracy by the oracle, FD on oracle features -------------
    entry: dict = {}
    if args.ddpm_build == "run":
        overrides = {"steps": args.ddpm_steps} if args.ddpm_steps else {}
        t0 = time.perf_counter()
        built = zoo.build("mnist-ddpm", work / "ddpm", device=args.device, mixed_precision=args.mixed_precision, **overrides)
        entry.update(build_seconds=round(time.perf_counter() - t0, 2), train_seconds=built["train_seconds"],
                     rebuilt_conditional_accuracy=built.get("conditional_accuracy"), rebuilt_fd_oracle=built.get("fd_oracle"))
    elif args.ddpm_build == "shipped":
        record = load_json(zoo.zoo_path("mnist-ddpm") / "guardgen.json")["metrics"]
        entry.update(build_seconds_from_record=record["train_seconds"], record_device=record["device"])
    pipe = load_model("zoo:mnist-ddpm", device=args.device)
    guidance = load_json(zoo.zoo_path("mnist-ddpm") / "guardgen.json")["sampling"]["guidance_scale"]
    quality = evaluate_class_conditional(pipe, oracle, per_class=args.eval_per_class, guidance_scale=guidance, seed=1)
    unguided = evaluate_class_conditional(pipe, oracle, per_class=max(args.eval_per_class // 2, 10), guidance_scale=1.0, seed=1)
    balanced = train.subset(torch.arange(len(train)) % 4 == 0)  # 100 per class (the split is sorted by class)
    real_fd = fd_from_features(classifier_features(oracle, balanced.images), classifier_features(oracle, test.images))
    entry.update(params=params(pipe.unet), guidance_scale=guidance, conditional_accuracy=quality["conditional_accuracy"],
                 per_class_accuracy=quality["per_class_accuracy"], fd_oracle=quality["fd_oracle"],
                 fd_oracle_real_train_vs_test=real_fd, samples_per_second_50_step=quality["samples_per_second_50_step"],
                 conditional_accuracy_no_guidance=unguided["conditional_accuracy"], fd_oracle_no_guidance=unguided["fd_oracle"],
                 eval_samples=quality["eval_samples"], target_conditional_accuracy=0.90)
    report["models"]["mnist-ddpm"] = entry

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = save_json(report, RESULTS / f"zoo{('-' + args.tag) if args.tag else ''}.json")
    print("| model | params | build s | quality | target |\n|---|---|---|---|---|")
    o = report["models"]["mnist-oracle"]
    print(f"| mnist-oracle | {o['params']:,} | {o['build_seconds']} | test acc {o['test_accuracy_rebuilt']:.3f} (shipped {o['test_accuracy_shipped']:.3f}) | >= 0.97 |")
    d = report["models"]["mnist-ddpm"]
    build_s = d.get("build_seconds", d.get("build_seconds_from_record", "-"))
    print(f"| mnist-ddpm | {d['params']:,} | {build_s} | cond acc {d['conditional_accuracy']:.3f}, FD {d['fd_oracle']:.3f} (real {real_fd:.3f}) | >= 0.90 |")
    if two:
        print(f"\n1 process: test acc {one['test_accuracy']:.3f} in {one['build_wall_seconds']} s; "
              f"2 processes: test acc {two['test_accuracy']:.3f} in {two['build_wall_seconds']} s")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
