"""How SFD's quality grows with iterations, for a few hyperparameter settings (zoo:mnist-ddpm or zoo:mnist-t2i,
forget 7 -> 1).

    python -m bench.sfd_sweep --device cuda --grid '{"lr": [1e-4, 3e-4], "ema_halflife": [0, 100]}' --eval-at 100 200 300
    python -m bench.sfd_sweep --model t2i --grid '{"forget_share": [0.125, 0.25]}' --eval-at 250 350 --tag cpu-t2i

Each setting is one SFD run; at each ``--eval-at`` iteration the live (EMA) one-step generator is scored by the
zoo oracle (forget rate, retained accuracy, FD on retained classes vs real test digits, recall; with
``--score-online`` the raw generator beside its EMA), and so is
the original 50-step sampler once, at the same sample count (or its figures are read from an earlier result,
``--original-from``, when they were measured with the same seed and sample count). For the text model the
concept is every training phrasing of the digit, as in bench/unlearn_diffusion.py, and the held-out
paraphrases are scored too. This is how the defaults of ``unlearn.sfd.SFD``
were chosen; it writes bench/results/sfd_sweep[-TAG].json.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import torch

from guardgen.checkpoint import load_json, save_json
from guardgen.data import load_mnist
from guardgen.models import load_model
from guardgen.models.conditioning import conditioning_for
from guardgen.models.diffusion import sample_images
from guardgen.utils import machine_info
from guardgen.zoo import zoo_path
from guardgen.zoo.t2i import WORDS
from unlearn import UNLEARN
from unlearn.evaluate import concept_plan, evaluate_concept_unlearning
from unlearn.sfd import _ema_decay, _ema_update

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["ddpm", "t2i"], default="ddpm")
    parser.add_argument("--original-from", default="", help="JSON with the original's figures: at key 'original', parts.<model>.original, "
                        "or the part run with the same model, --forget and --override")
    parser.add_argument("--grid", default='{"lr": [1e-4]}', help="JSON: SFD field (or 'lr' for both lrs) -> values")
    parser.add_argument("--eval-at", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--per-condition", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--forget", type=int, default=7)
    parser.add_argument("--override", type=int, default=1)
    parser.add_argument("--score-online", action="store_true", help="also score the raw generator beside its EMA")
    parser.add_argument("--extra-ema", type=float, nargs="*", default=[],
                        help="half-lives (iterations) of extra generator EMAs kept beside the run's own and scored too")
    parser.add_argument("--tag", default="")
    args = parser.parse_args()

    pipe = load_model(f"zoo:mnist-{args.model}", device="cpu")
    oracle = load_model("zoo:mnist-oracle", kind="classifier", device="cpu")
    cond = conditioning_for(pipe)
    if cond.kind == "class":
        plan = concept_plan(pipe, cond, forget=[args.forget], override=[args.override])
    else:
        plan = concept_plan(pipe, cond, forget=[f"a handwritten digit {WORDS[args.forget]}"],
                            override=[f"a handwritten digit {WORDS[args.override]}"], expand=True)
    forget, override, retain = plan["forget"], plan["override"], plan["retain"]
    real = load_mnist("test").exclude({args.forget}).images
    score = dict(forget=plan["forget_map"], retain=plan["retain_map"], paraphrases=plan["paraphrase_map"],
                 per_condition=args.per_condition, real_retained=real, override_class=args.override)
    guidance = load_json(zoo_path(f"mnist-{args.model}") / "guardgen.json")["sampling"]["guidance_scale"]
    out_path = RESULTS / f"sfd_sweep{'-' + args.tag if args.tag else ''}.json"
    result = {"args": vars(args), "machine": machine_info(), "runs": []}

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    if args.original_from:
        original = earlier_original(load_json(args.original_from), args.model, args.forget, args.override)
        result["original_from"] = args.original_from
    else:
        original = evaluate_concept_unlearning(
            lambda c: sample_images(pipe.to(device), c, num_inference_steps=50, guidance_scale=guidance, seed=args.seed),
            oracle.to(device), **score)
        pipe.to("cpu")
    result["original"] = {k: v for k, v in original.items() if k != "per_condition"}
    print("original", json.dumps(result["original"]), flush=True)

    grid = json.loads(args.grid)
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        params = dict(setting)
        if "lr" in params:
            params["lr_fake"] = params["lr_generator"] = params.pop("lr")
        base = {"iterations": max(args.eval_at), "batch_size": args.batch_size, "seed": args.seed, "teacher_guidance": guidance,
                "device": args.device, "mixed_precision": args.mixed_precision}
        sfd = UNLEARN.create("sfd", **{**base, **params})
        run = {"setting": setting, "evals": []}
        clock = {"train": 0.0, "since": time.perf_counter()}
        extra = {}  # half-life -> EMA of the raw generator, updated as SFD updates its own

        def callback(step, logs, sfd=sfd, run=run, clock=clock, extra=extra):
            for halflife in args.extra_ema:
                if halflife not in extra:
                    extra[halflife] = copy.deepcopy(sfd.online_generator_).eval().requires_grad_(False)
                _ema_update(extra[halflife], sfd.online_generator_, _ema_decay(halflife, sfd.ema_rampup, step))
            if step not in args.eval_at:
                return
            clock["train"] += time.perf_counter() - clock["since"]
            has_ema = sfd.ema_halflife > 0
            kinds = ["ema", "online"] if has_ema and args.score_online else ["ema" if has_ema else "online"]
            kinds += [f"ema{h:g}" for h in args.extra_ema]
            for kind in kinds:
                own = sfd.generator_
                if kind.startswith("ema") and kind != "ema":
                    sfd.generator_ = extra[float(kind[3:])]
                one = sfd.to_pipeline(pipe, device=None, online=kind == "online")
                sfd.generator_ = own
                with torch.no_grad():
                    figures = evaluate_concept_unlearning(lambda c: sample_images(one, c, seed=args.seed), oracle.to(one.device), **score)
                figures = {k: v for k, v in figures.items() if k != "per_condition"}
                figures.update(step=step, generator=kind, train_seconds=round(clock["train"], 2),
                               fd_ratio=figures["fd_retained"] / result["original"]["fd_retained"])
                run["evals"].append(figures)
                print(json.dumps({"setting": setting, **figures}), flush=True)
            clock["since"] = time.perf_counter()

        sfd.fit(pipe, forget=forget, retain=retain, override=override, callback=callback)
        result["runs"].append(run)
        save_json(result, out_path)


def earlier_original(earlier: dict, model: str, forget: int, override: int) -> dict:
    """The original's figures in an earlier result: at key ``original``, at ``parts.<model>.original`` (a bench
    file), or in the one part whose run had this model, forgotten class and override (a file of sweeps)."""
    if "original" in earlier:
        return earlier["original"]
    parts = earlier.get("parts", {})
    if model in parts:
        return parts[model]["original"]
    same = [p["original"] for p in parts.values()
            if "original" in p and (p["args"]["model"], p["args"]["forget"], p["args"]["override"]) == (model, forget, override)]
    if not same:
        raise SystemExit(f"no original figures for {model} forgetting {forget} -> {override} in --original-from")
    return same[0]


if __name__ == "__main__":
    main()
