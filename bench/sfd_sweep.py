"""How SFD's quality grows with iterations, for a few hyperparameter settings (zoo:mnist-ddpm, forget 7 -> 1).

    python bench/sfd_sweep.py --device cuda --grid '{"lr": [1e-4, 3e-4], "ema_decay": [0, 0.99]}' --eval-at 100 200 300

Each setting is one SFD run; at each ``--eval-at`` iteration the live (EMA) one-step generator is scored by the
zoo oracle (forget rate, retained accuracy, FD on retained classes vs real test digits, recall), and so is
the original 50-step sampler once, at the same sample count. This is how the defaults of ``unlearn.sfd.SFD``
were chosen; it writes bench/results/sfd_sweep[-TAG].json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from guardgen.checkpoint import save_json
from guardgen.data import load_mnist
from guardgen.models import load_model
from guardgen.models.diffusion import sample_images
from guardgen.utils import machine_info
from unlearn import UNLEARN
from unlearn.evaluate import evaluate_concept_unlearning

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default='{"lr": [1e-4]}', help="JSON: SFD field (or 'lr' for both lrs) -> values")
    parser.add_argument("--eval-at", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--per-condition", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget", type=int, default=7)
    parser.add_argument("--override", type=int, default=1)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    pipe = load_model("zoo:mnist-ddpm", device="cpu")
    oracle = load_model("zoo:mnist-oracle", kind="classifier", device="cpu")
    forget, override = [args.forget], [args.override]
    retain = [c for c in range(10) if c not in forget]
    real = load_mnist("test").exclude(set(forget)).images
    score = dict(forget={c: c for c in forget}, retain={c: c for c in retain}, per_condition=args.per_condition,
                 real_retained=real, override_class=args.override)
    out_path = RESULTS / f"sfd_sweep{'-' + args.tag if args.tag else ''}.json"
    result = {"args": vars(args), "machine": machine_info(), "runs": []}

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    original = evaluate_concept_unlearning(
        lambda c: sample_images(pipe.to(device), c, num_inference_steps=50, seed=args.seed), oracle.to(device), **score)
    pipe.to("cpu")
    result["original"] = {k: v for k, v in original.items() if k != "per_condition"}
    print("original", json.dumps(result["original"]), flush=True)

    grid = json.loads(args.grid)
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        params = dict(setting)
        if "lr" in params:
            params["lr_fake"] = params["lr_generator"] = params.pop("lr")
        base = {"iterations": max(args.eval_at), "batch_size": args.batch_size, "seed": args.seed,
                "device": args.device, "mixed_precision": args.mixed_precision}
        sfd = UNLEARN.create("sfd", **{**base, **params})
        run = {"setting": setting, "evals": []}
        clock = {"train": 0.0, "since": time.perf_counter()}

        def callback(step, logs, sfd=sfd, run=run, clock=clock):
            if step not in args.eval_at:
                return
            clock["train"] += time.perf_counter() - clock["since"]
            one = sfd.to_pipeline(pipe, device=None)
            with torch.no_grad():
                figures = evaluate_concept_unlearning(lambda c: sample_images(one, c, seed=args.seed), oracle.to(one.device), **score)
            figures = {k: v for k, v in figures.items() if k != "per_condition"}
            figures.update(step=step, train_seconds=round(clock["train"], 2),
                           fd_ratio=figures["fd_retained"] / result["original"]["fd_retained"])
            run["evals"].append(figures)
            print(json.dumps({"setting": setting, **figures}), flush=True)
            clock["since"] = time.perf_counter()

        sfd.fit(pipe, forget=forget, retain=retain, override=override, callback=callback)
        result["runs"].append(run)
        save_json(result, out_path)


if __name__ == "__main__":
    main()
