"""Benchmark concept unlearning on the zoo: SFD beside ESD, gradient ascent and retraining, one run, same seeds.

    python -m bench.unlearn_diffusion                      # both zoo models, CPU (about an hour on 2 cores)
    python -m bench.unlearn_diffusion --models ddpm --device cuda --mixed-precision bf16 --batch-size 128 --tag h100

Part ddpm: zoo:mnist-ddpm, forget class --forget-class (default 7) -> --override-class (default 1).
Part t2i: zoo:mnist-t2i, forget "a handwritten digit <word>" (and its other training phrasings) ->
"a handwritten digit <override word>"; held-out paraphrases measure leakage.
Every method is scored by the zoo oracle on the same conditions and seeds. Writes
bench/results/unlearn_diffusion[-TAG].json and .md (the markdown table it prints).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from guardgen.checkpoint import load_json, save_json
from guardgen.models import load_model
from guardgen.models.conditioning import conditioning_for
from guardgen.utils import machine_info, model_device
from guardgen.zoo import zoo_path
from unlearn import UNLEARN
from unlearn.evaluate import concept_plan, evaluate_before_after
from unlearn.sfd import SFD

RESULTS = Path(__file__).parent / "results"
TARGETS = {"forget_rate": "<= 0.01", "retain_accuracy": "within 0.03 of original", "fd_retained": "<= 1.3x original",
           "train_seconds": "<= 0.25x retrain", "samples_per_second": ">= 20x original", "paraphrase_forget_rate": "<= 0.05 (text)"}


def run_part(name: str, spec: str, forget: list, override: list, args, work: Path, save=lambda part: None,
             done: dict | None = None) -> dict:
    pipe = load_model(spec, device=model_device(args.device))  # sampling and evaluation run there too
    oracle = load_model("zoo:mnist-oracle", kind="classifier", device="cpu")
    cond = conditioning_for(pipe)
    plan = concept_plan(pipe, cond, forget=forget, override=override, expand=True)
    guidance = load_json(zoo_path(spec[4:]) / "guardgen.json")["sampling"]["guidance_scale"]
    common = {"seed": args.seed, "device": args.device, "mixed_precision": args.mixed_precision}
    methods = {
        "sfd": {"iterations": args.sfd_iterations, "batch_size": args.batch_size, "teacher_guidance": guidance},
        "esd": {"iterations": args.baseline_iterations},
        "ga": {"iterations": args.baseline_iterations, "batch_size": args.batch_size},
        "retrain": {"zoo_name": spec[4:], "steps": args.retrain_steps, "zoo_overrides": {"eval_samples_per_class": 0}},
    }
    out = {"model": spec, "plan": {k: v for k, v in plan.items() if not k.endswith("_map")}, "methods": {}}
    original = None
    if done:  # --resume: keep what an interrupted run of the same settings measured
        out["methods"], original = dict(done.get("methods", {})), done.get("original")
        out["resumed"] = sorted(out["methods"])
    for method in args.methods:
        if method in out["methods"]:
            continue
        runner = UNLEARN.create(method, **common, **{k: v for k, v in methods[method].items() if v is not None})
        t0, c0 = time.perf_counter(), time.process_time()
        runner.fit(pipe, forget=plan["forget"], retain=plan["retain"], override=plan["override"], oracle=oracle,
                   out=work / f"{name}-{method}")
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0  # CPU time: robust to a busy machine
        unlearned = runner.to_pipeline(pipe)
        scores = evaluate_before_after(pipe, unlearned, oracle, plan, per_condition=args.per_condition, seed=args.seed,
                                       original_guidance=guidance, before=original)
        original = scores["before"]
        out["methods"][method] = {**scores["after"], "train_seconds": round(seconds, 2), "train_cpu_seconds": round(cpu_seconds, 2), "params": runner.__dict__.get("iterations")}
        out["original"] = original
        save(out)
        print(f"[{name}] {method}: forget {scores['after']['forget_rate']:.3f}  retain {scores['after']['retain_accuracy']:.3f}  "
              f"FD {scores['after'].get('fd_retained', float('nan')):.3f}  {seconds:.0f}s", flush=True)
    out["original"] = original
    return out


def ratios(part: dict) -> dict:
    o, m = part["original"], part["methods"]
    r = {}
    for name, v in m.items():
        r[name] = {
            "retain_accuracy_minus_original": v["retain_accuracy"] - o["retain_accuracy"],
            "fd_ratio_to_original": v["fd_retained"] / o["fd_retained"],
            "throughput_ratio_to_original": v["samples_per_second"] / o["samples_per_second"],
        }
        if "retrain" in m:
            r[name]["time_ratio_to_retrain"] = v["train_seconds"] / m["retrain"]["train_seconds"]
            if "train_cpu_seconds" in v and "train_cpu_seconds" in m["retrain"]:
                r[name]["cpu_time_ratio_to_retrain"] = v["train_cpu_seconds"] / m["retrain"]["train_cpu_seconds"]
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ddpm", "t2i"], choices=["ddpm", "t2i"])
    parser.add_argument("--methods", nargs="+", default=["sfd", "esd", "ga", "retrain"])
    parser.add_argument("--forget-class", type=int, default=7)
    parser.add_argument("--override-class", type=int, default=1)
    parser.add_argument("--sfd-iterations", type=int, default=None, help=f"default: SFD's own ({SFD.iterations})")
    parser.add_argument("--baseline-iterations", type=int, default=200)
    parser.add_argument("--retrain-steps", type=int, default=None, help="default: the zoo model's own length")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-condition", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--tag", default="")
    parser.add_argument("--resume", action="store_true", help="keep the methods (and original) already in the results file")
    args = parser.parse_args()

    from guardgen.zoo.t2i import WORDS

    work = Path(tempfile.mkdtemp(prefix="guardgen-unlearn-"))
    report = {"machine": machine_info(), "args": vars(args), "targets": TARGETS, "parts": {}}
    path = RESULTS / f"unlearn_diffusion{('-' + args.tag) if args.tag else ''}.json"
    if args.resume and path.is_file():
        earlier = load_json(path)
        report["parts"] = earlier.get("parts", {})
        report["resumed_from_args"] = earlier.get("args")
    for name in args.models:
        def save(part, name=name):  # after every method, so a long or interrupted run keeps what it measured
            report["parts"][name] = part
            save_json(report, path)

        if name == "ddpm":
            part = run_part("ddpm", "zoo:mnist-ddpm", [args.forget_class], [args.override_class], args, work, save,
                            done=report["parts"].get(name))
        else:
            part = run_part("t2i", "zoo:mnist-t2i", [f"a handwritten digit {WORDS[args.forget_class]}"],
                            [f"a handwritten digit {WORDS[args.override_class]}"], args, work, save,
                            done=report["parts"].get(name))
        part["ratios"] = ratios(part)
        save(part)

    lines = []
    for name, part in report["parts"].items():
        o = part["original"]
        lines += [f"\n### {part['model']} (original: forget {o['forget_rate']:.3f}, retain {o['retain_accuracy']:.3f}, "
                  f"FD {o['fd_retained']:.3f}, {o['samples_per_second']:.1f} samples/s; its own override samples read as "
                  f"the forgotten class: {o.get('override_as_forgotten_rate', float('nan')):.3f})\n",
                  "| method | forget rate | paraphrase forget | retain acc (delta) | FD (x orig) | recall | train s (x retrain) | samples/s (x orig) |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, v in part["methods"].items():
            r = part["ratios"][m]
            lines.append(f"| {m} | {v['forget_rate']:.3f} | {v.get('paraphrase_forget_rate', float('nan')):.3f} | "
                         f"{v['retain_accuracy']:.3f} ({r['retain_accuracy_minus_original']:+.3f}) | {v['fd_retained']:.3f} ({r['fd_ratio_to_original']:.2f}x) | "
                         f"{v.get('recall_retained', float('nan')):.3f} | {v['train_seconds']:.0f} ({r.get('time_ratio_to_retrain', float('nan')):.2f}x) | "
                         f"{v['samples_per_second']:.1f} ({r['throughput_ratio_to_original']:.1f}x) |")
    print("\n".join(lines))
    path.with_suffix(".md").write_text("# Concept unlearning on the zoo (one run, same seeds)\n" + "\n".join(lines) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
