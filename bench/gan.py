"""Benchmark the GAN methods on the zoo, one run, same seeds: Adapt-then-Unlearn and open-world attribution.

    python -m bench.gan                                   # both parts, CPU
    python -m bench.gan --parts attribution --tag quick
    python -m bench.gan --parts attribution --ood wta --tag wta   # the paper's WTA hash instead of the PU scorer
    python -m bench.gan --parts attribution --seen real mnist-gan mnist-gan-dcgan-s1 mnist-gan-upsample \
        --unseen mnist-gan-resnet mnist-gan-resnet-s1 mnist-gan-upsample-s1 --tag unseen-resnet

Part unlearn: zoo:mnist-gan, forget --forget-class (default 7) with the zoo oracle as the classifier.
Adapt-then-Unlearn with each repulsion form (inverse, negative, exponential L2; stage 1 is run once and
shared by the three) beside the naive baseline (adversarial fine-tuning on the samples without the
digit). Figures: share of samples the oracle labels as the digit (before/after, target <= 1%), FD on
oracle features to the real retained test digits (target <= 1.2x the original's), precision/recall.

Part attribution: seen sources real MNIST + mnist-gan + mnist-gan-upsample + mnist-gan-resnet; unseen
mnist-gan-dcgan-s1, mnist-gan-upsample-s1, mnist-gan-resnet-s1 (same architectures, other seeds; --seen
and --unseen pick others). Closed-set accuracy on seen test images (target >= 95%; the model's attributor,
with ``pu`` the pixel regression, and the network alone beside it), OOD AUROC of each
scorer (seen vs unseen; ``pu`` is transductive: the test images are its cross-fitted unlabelled pool),
then discovery over all test images: NMI and purity (targets >= 0.85), ARI, unseen generators
discovered as their own clusters (target >= 2 of 3), share of images discovered.

Writes bench/results/gan[-TAG].json after every step and bench/results/gan[-TAG].md at the end.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

if not __package__:  # as a file, bench/ comes first on sys.path and bench/detectors.py shadows the package
    raise SystemExit("run it from the repository root as a module: python -m bench.gan")

import numpy as np
import torch

from guardgen.checkpoint import load_json, save_json
from guardgen.utils import machine_info

RESULTS = Path(__file__).parent / "results"
SEEN = ["real", "mnist-gan", "mnist-gan-upsample", "mnist-gan-resnet"]
UNSEEN = ["mnist-gan-dcgan-s1", "mnist-gan-upsample-s1", "mnist-gan-resnet-s1"]
TARGETS = {"forget_share": "<= 0.01", "fd_ratio": "<= 1.2", "closed_set_accuracy": ">= 0.95", "nmi": ">= 0.85",
           "purity": ">= 0.85", "num_unseen_discovered": ">= 2 of 3"}


def run_unlearn(args, record, save) -> None:
    from guardgen.models import load_model
    from unlearn.adapt_then_unlearn import AdaptThenUnlearn, GANFineTune, evaluate_gan_unlearning

    g, d = load_model("zoo:mnist-gan", kind="gan")
    oracle = load_model("zoo:mnist-oracle", kind="classifier")
    forget = [args.forget_class]
    common = dict(num_samples=args.num_samples, unlearn_iterations=args.unlearn_iterations, batch_size=args.batch_size,
                  lr_g=args.lr, lr_d=args.lr, feature_min_prob=args.feature_min_prob, seed=args.seed, device=args.device)
    part = record.setdefault("unlearn", {"model": "zoo:mnist-gan", "forget": forget, "settings": common,
                                         "adapt_iterations": args.adapt_iterations, "ewc_lambda": args.ewc_lambda,
                                         "gammas": {"inverse": args.gamma_inverse, "negative": args.gamma_negative,
                                                    "exponential": args.gamma_exponential},
                                         "eval_samples": args.eval_samples, "methods": {}})

    def score(name, m, seconds, extra=None):
        r = evaluate_gan_unlearning(g, m.generator_, oracle, forget, n=args.eval_samples, seed=args.seed + 1)
        part["original"] = r["before"]
        part["methods"][name] = {**r["after"], "fd_ratio": r["fd_ratio"], "train_seconds": round(seconds, 1),
                                 "share_in_training_samples": m.share_before_, **(extra or {})}
        save()
        print(f"{name}: share {r['before']['forget_share']:.4f} -> {r['after']['forget_share']:.4f}, "
              f"FD {r['before']['fd_retained']:.3f} -> {r['after']['fd_retained']:.3f} (x{r['fd_ratio']:.2f})", flush=True)

    t0 = time.perf_counter()
    base = GANFineTune(**common).fit((g, d), forget=forget, classifier=oracle)
    score("gan_finetune (naive)", base, time.perf_counter() - t0)
    adapted, stage1_seconds = None, 0.0
    for form in ("negative", "inverse", "exponential"):
        gamma = getattr(args, f"gamma_{form}")
        t0 = time.perf_counter()
        m = AdaptThenUnlearn(**common, adapt_iterations=args.adapt_iterations, ewc_lambda=args.ewc_lambda,
                             repulsion=form, gamma=gamma).fit((g, d), forget=forget, classifier=oracle, adapted=adapted)
        seconds = time.perf_counter() - t0
        if adapted is None:
            adapted = m.adapted_
            stage1 = evaluate_gan_unlearning(g, adapted, oracle, forget, n=args.eval_samples // 2, seed=args.seed + 2)
            stage1_seconds = sum(1 for h in m.history_ if h["stage"] == "adapt") / max(len(m.history_), 1) * seconds
            part["stage1"] = {"forget_share": stage1["after"]["forget_share"], "fd_retained": stage1["after"]["fd_retained"],
                              "seconds": round(stage1_seconds, 1)}
        else:
            seconds += stage1_seconds  # the shared stage 1 counts for every form
        score(f"adapt_then_unlearn ({form}, gamma {gamma})", m, seconds,
              {"initial_distance": m.initial_distance_, "final_distance": m.final_distance_})


def _sources(names, n, seed, split):
    from guardgen.data import load_mnist
    from guardgen.models import load_model
    from guardgen.models.gan import sample_gan

    xs, ys = [], []
    for i, name in enumerate(names):
        if name == "real":
            x = load_mnist(split).images
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]
        else:
            gen, _ = load_model(f"zoo:{name}", kind="gan")
            x = sample_gan(gen, n, generator_rng=torch.Generator().manual_seed(seed * 1000 + i))
        xs.append(x)
        ys.append(torch.full((len(x),), i))
    return torch.cat(xs), torch.cat(ys)


def run_attribution(args, record, save) -> None:
    from detectors.attribution import OpenWorldAttribution, discovery_metrics
    from guardgen.metrics import auroc

    SEEN, UNSEEN = args.seen, args.unseen
    names = SEEN + UNSEEN
    x_train, y_train = _sources(SEEN, args.train_per_source, args.seed, "train")
    x_test, y_test = _sources(names, args.test_per_source, args.seed + 1, "test")
    settings = dict(width=args.width, embed_dim=64, epochs=args.epochs, later_epochs=args.later_epochs,
                    n_clusters=args.clusters, rounds=args.rounds, svm_min_members=args.svm_min_members,
                    ood=args.ood, seed=args.seed, device=args.device)
    part = record.setdefault("attribution", {"seen": SEEN, "unseen": UNSEEN, "train_per_source": args.train_per_source,
                                             "test_per_source": args.test_per_source, "settings": settings})
    t0 = time.perf_counter()
    model = OpenWorldAttribution(**settings).fit(x_train, y_train, SEEN)
    part["fit_seconds"] = round(time.perf_counter() - t0, 1)
    seen_mask = y_test < len(SEEN)
    closed = (model.predict_proba(x_test[seen_mask]).argmax(1) == y_test[seen_mask]).float().mean().item()
    pred = model.predict(x_test)
    part["closed_set_accuracy"] = closed  # the model's closed-set attributor (with pu: the pixel regression)
    part["closed_set_accuracy_network"] = (model.predict_proba(x_test[seen_mask], network=True).argmax(1)
                                           == y_test[seen_mask]).float().mean().item()
    part["seen_attributed_correctly"] = (pred[seen_mask] == y_test[seen_mask]).float().mean().item()
    part["seen_rejected"] = (pred[seen_mask] == -1).float().mean().item()
    part["unseen_rejected"] = (pred[~seen_mask] == -1).float().mean().item()
    part["unseen_rejected_per_source"] = {n: (pred[y_test == len(SEEN) + i] == -1).float().mean().item()
                                          for i, n in enumerate(UNSEEN)}
    scores = model.ood_scores(x_test)
    is_seen = seen_mask.numpy().astype(int)
    part["ood_auroc"] = {k: auroc(is_seen, scores[k].numpy()) for k in ("wta", "msp", "energy", "knn")}
    part["ood_auroc"]["pu"] = auroc(is_seen, -model.novelty_scores(x_test).numpy())  # transductive, cross-fitted
    save()
    print(f"closed-set accuracy {closed:.4f}; rejected seen {part['seen_rejected']:.3f}, unseen {part['unseen_rejected']:.3f}; "
          f"OOD AUROC {part['ood_auroc']}", flush=True)
    t0 = time.perf_counter()
    model.discover(x_test)
    part["discover_seconds"] = round(time.perf_counter() - t0, 1)
    part["rounds"] = [h for h in model.history_ if "loss" not in h]
    assigned = model.predict(x_test, assign_unknown=True)
    unseen_ids = list(range(len(SEEN), len(names)))
    m = discovery_metrics(y_test.numpy(), assigned.numpy(), unseen=unseen_ids)
    m["unseen_discovered"] = [names[i] for i in m["unseen_discovered"]]
    raw = model.predict(x_test)
    in_cluster = raw >= model.num_seen_
    m["share_discovered"] = in_cluster.float().mean().item()  # pool images the model puts in discovered clusters
    m["share_unseen_in_clusters"] = in_cluster[~seen_mask].float().mean().item()
    m["clusters"] = model.num_classes_ - model.num_seen_
    m["seen_still_attributed"] = (raw[seen_mask] == y_test[seen_mask]).float().mean().item()
    # discovered-set metrics (paper: purity/NMI on the discovered images only)
    if in_cluster.sum() > 1:
        dm = discovery_metrics(y_test[in_cluster].numpy(), raw[in_cluster].numpy())
        m["discovered_set"] = {k: dm[k] for k in ("purity", "nmi", "ari")}
    cont = np.zeros((len(names), model.num_classes_ + 1), dtype=int)
    for t, p in zip(y_test.tolist(), raw.tolist()):
        cont[t, p + 1] += 1
    m["contingency"] = {"rows": names, "columns": ["unknown"] + model.class_names_, "counts": cont.tolist()}
    part["after_discovery"] = m
    save()
    print(f"after discovery: NMI {m['nmi']:.3f} purity {m['purity']:.3f} ARI {m['ari']:.3f} "
          f"unseen discovered {m['unseen_discovered']} share discovered {m['share_discovered']:.3f}", flush=True)


def markdown(record) -> str:
    lines = [f"# GAN benchmark ({record['tag']}, seed {record['seed']}; wall seconds by part {record.get('wall_seconds_by_part')})", ""]
    u = record.get("unlearn")
    if u and u.get("methods"):
        o = u["original"]
        lines += [f"## Adapt-then-Unlearn on zoo:mnist-gan, forgetting digit {u['forget'][0]}", "",
                  f"Original: share {o['forget_share']:.4f}, FD to retained real digits {o['fd_retained']:.3f}, "
                  f"recall {o['recall']:.3f} ({u['eval_samples']} samples).", "",
                  "| method | share with the digit (target <= 0.01) | FD retained | FD ratio (target <= 1.2) | precision | recall | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in u["methods"].items():
            lines.append(f"| {name} | {r['forget_share']:.4f} | {r['fd_retained']:.3f} | {r['fd_ratio']:.2f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} | {r['train_seconds']} |")
        if "stage1" in u:
            lines += ["", f"Stage 1 (negative adaptation) generator: share with the digit {u['stage1']['forget_share']:.3f}."]
        lines.append("")
    a = record.get("attribution")
    if a and "after_discovery" in a:
        m = a["after_discovery"]
        lines += ["## Open-world attribution", "", f"Seen: {', '.join(a['seen'])}; unseen: {', '.join(a['unseen'])}; "
                  f"{a['train_per_source']} train images per seen source, {a['test_per_source']} test images per source.", "",
                  "| figure | value | target |", "|---|---|---|",
                  f"| closed-set accuracy on seen | {a['closed_set_accuracy']:.4f} | >= 0.95 |",
                  f"| closed-set accuracy on seen, network alone | {a.get('closed_set_accuracy_network', float('nan')):.4f} | |",
                  f"| seen test images rejected as unknown (before discovery) | {a['seen_rejected']:.3f} | |",
                  f"| unseen test images rejected as unknown (before discovery) | {a['unseen_rejected']:.3f} | |",
                  "| OOD AUROC " + " / ".join(a["ood_auroc"]) + " | " + " / ".join(f"{v:.3f}" for v in a["ood_auroc"].values()) + " | |",
                  f"| NMI (all test images) | {m['nmi']:.3f} | >= 0.85 |",
                  f"| purity (all test images) | {m['purity']:.3f} | >= 0.85 |",
                  f"| ARI (all test images) | {m['ari']:.3f} | |",
                  f"| unseen generators discovered | {m['num_unseen_discovered']} of {len(a['unseen'])} ({', '.join(m['unseen_discovered']) or 'none'}) | >= 2 of 3 |",
                  f"| share of test images in discovered clusters | {m['share_discovered']:.3f} | |",
                  f"| share of unseen-source images in discovered clusters | {m['share_unseen_in_clusters']:.3f} | |",
                  f"| clusters kept | {m['clusters']} | |", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["attribution", "unlearn"], choices=["attribution", "unlearn"])
    p.add_argument("--tag", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    # unlearn
    p.add_argument("--forget-class", type=int, default=7)
    p.add_argument("--num-samples", type=int, default=5000)
    p.add_argument("--adapt-iterations", type=int, default=200)
    p.add_argument("--unlearn-iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--ewc-lambda", type=float, default=1.0)
    p.add_argument("--gamma-negative", type=float, default=1e-3)
    p.add_argument("--gamma-inverse", type=float, default=1.0)
    p.add_argument("--gamma-exponential", type=float, default=1.0)
    p.add_argument("--eval-samples", type=int, default=2000)
    p.add_argument("--feature-min-prob", type=float, default=0.005,
                   help="also treat samples with oracle p(forgotten) >= this as showing it (0: argmax only, the paper's "
                        "labelling and the method's default)")
    # attribution
    p.add_argument("--seen", nargs="+", default=SEEN, help="labelled sources: 'real' and zoo GAN names")
    p.add_argument("--unseen", nargs="+", default=UNSEEN, help="zoo GANs only in the discovery pool")
    p.add_argument("--train-per-source", type=int, default=4000)
    p.add_argument("--test-per-source", type=int, default=300)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--later-epochs", type=int, default=5)
    p.add_argument("--clusters", type=int, default=12)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ood", default="pu", choices=["wta", "msp", "energy", "knn", "pu"], help="OOD scorer used for discovery")
    p.add_argument("--svm-min-members", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"gan-{args.tag}.json"
    record = {"tag": args.tag, "seed": args.seed, "args": vars(args), "machine": machine_info(), "targets": TARGETS}
    t_start = time.perf_counter()

    def save():
        """Write this run's parts into the results file, keeping parts another run (e.g. --parts X) wrote there."""
        record["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        merged = load_json(path) if path.is_file() else {}
        merged.update({k: v for k, v in record.items() if k not in ("unlearn", "attribution", "args", "wall_seconds")})
        for part in args.parts:
            if part in record:
                merged[part] = record[part]
            merged.setdefault("args_by_part", {})[part] = vars(args)
            merged.setdefault("wall_seconds_by_part", {})[part] = record["wall_seconds"]
        save_json(merged, path)
        return merged

    for part in args.parts:
        (run_attribution if part == "attribution" else run_unlearn)(args, record, save)
    md = markdown(save())
    (RESULTS / f"gan-{args.tag}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
