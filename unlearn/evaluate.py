"""Evaluation of concept unlearning in a conditional generator, judged by an oracle classifier.

- forget rate: share of samples drawn for a forgotten concept that the oracle still classifies as it;
- retained accuracy: share of samples for retained concepts classified as their own concept;
- FD on retained concepts against real images (oracle features), with k-NN recall beside it, since
  a collapsed generator can look accurate;
- paraphrase leakage (text concepts): the forget rate on held-out phrasings;
- sampling throughput.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from guardgen.metrics import fd_from_features, precision_recall_knn
from guardgen.models.classifier import classifier_features
from guardgen.utils import predict_logits

__all__ = ["evaluate_concept_unlearning", "concept_plan", "evaluate_before_after", "evaluate_redaction"]


def evaluate_concept_unlearning(
    sample_fn: Callable[[list], torch.Tensor],
    oracle: torch.nn.Module,
    *,
    forget: dict,
    retain: dict,
    paraphrases: dict | None = None,
    per_condition: int = 100,
    real_retained: torch.Tensor | None = None,
    override_class: int | None = None,
    retime_below: float = 10.0,
) -> dict:
    """Score a generator; ``forget``/``retain``/``paraphrases`` map a condition (class id or prompt) to
    the oracle class it depicts; ``sample_fn(conditions)`` returns (N, C, H, W) images in [0, 1].

    ``override_as_forgotten_rate`` (with ``override_class`` among the retained classes): the share of the
    override condition's own samples that the oracle reads as a forgotten class. Methods that map the
    forgotten concept onto the override (SFD, ESD-style) inherit it as a floor on their forget rate.

    ``samples_per_second``: a draw that took under ``retime_below`` seconds is timed once more and the faster
    time kept (as ``timeit`` does), since one-time costs (kernel loading and selection for each new batch
    shape, on a GPU above all) weigh on a short draw; a long draw amortises them and is not repeated."""
    conditions = [c for c in forget for _ in range(per_condition)] + [c for c in retain for _ in range(per_condition)]
    paraphrases = paraphrases or {}
    conditions += [c for c in paraphrases for _ in range(per_condition)]
    mapping = {**forget, **retain, **paraphrases}
    t0 = time.perf_counter()
    images = sample_fn(conditions)
    seconds = time.perf_counter() - t0
    if seconds < retime_below:
        t0 = time.perf_counter()
        sample_fn(conditions)
        seconds = min(seconds, time.perf_counter() - t0)
    targets = torch.tensor([mapping[c] for c in conditions])
    pred = predict_logits(oracle, images).argmax(1)
    hits = (pred == targets).float()
    n_f, n_r = len(forget) * per_condition, len(retain) * per_condition
    result = {
        "forget_rate": hits[:n_f].mean().item(),
        "retain_accuracy": hits[n_f : n_f + n_r].mean().item(),
        "per_condition": {str(c): hits[[i for i, x in enumerate(conditions) if x == c]].mean().item() for c in mapping},
        "samples_per_second": len(conditions) / seconds,
        "samples": len(conditions),
    }
    if override_class is not None:
        result["override_rate"] = (pred[:n_f] == override_class).float().mean().item()
        # the floor SFD-style methods inherit: how often this model's own override-class samples read as a
        # forgotten class (the override is scored wherever it is a retained condition)
        rows = [i for i in range(n_f, n_f + n_r) if retain[conditions[i]] == override_class]
        if rows:
            forgotten = torch.tensor(sorted(set(forget.values())))
            result["override_as_forgotten_rate"] = torch.isin(pred[rows], forgotten).float().mean().item()
    if paraphrases:
        result["paraphrase_forget_rate"] = hits[n_f + n_r :].mean().item()
    if real_retained is not None:
        fake = classifier_features(oracle, images[n_f : n_f + n_r])
        real = classifier_features(oracle, real_retained)
        result["fd_retained"] = fd_from_features(fake, real)
        result.update({f"{k}_retained": v for k, v in precision_recall_knn(real, fake).items()})
    return result


def concept_plan(pipe, cond, *, forget: Sequence, override: Sequence = (), retain: Sequence = (), expand: bool = False,
                 require_retain: bool = True) -> dict:
    """Resolve what to forget, what it becomes, what to retain, and which oracle class each condition depicts.

    Class models: ids. Text models: prompts; the zoo's ``mnist-t2i`` knows the digit of each of its
    phrasings (``concept_class``), which gives the oracle classes and the held-out paraphrases.
    ``expand`` adds the model's other training phrasings of the same concept to the forget set
    (the held-out phrasings stay out, to measure leakage). ``require_retain=False``: a text model with neither a
    prompt table nor ``retain`` gets an empty retained set (a method with retained prompts of its own: redaction).
    """
    from guardgen.errors import GuardgenError

    if not forget:
        raise GuardgenError("nothing to forget: name the concept (a class or a prompt) to forget")
    forget = list(dict.fromkeys(cond.parse(c) for c in forget))  # "7" and "07" given twice: forgotten once
    override = [cond.parse(c) for c in override]
    retain = list(dict.fromkeys(cond.parse(c) for c in retain or []))
    if set(forget) & set(override):
        same = sorted(set(forget) & set(override), key=str)[0]
        raise GuardgenError(f"{same!r}, what the concept becomes (--override, or redact's --reference), equals the "
                            "forgotten concept; choose another")
    both = sorted(set(forget) & set(retain), key=str)
    if both:
        raise GuardgenError(f"{both[0]!r} is both forgotten and retained; drop it from --retain")
    plan = {"kind": cond.kind, "forget": forget, "override": override}
    if cond.kind == "class":
        plan["retain"] = [c for c in cond.all_concepts() if c not in forget]
        plan.update(forget_map={c: c for c in forget}, retain_map={c: c for c in plan["retain"]}, paraphrase_map={})
        plan["override_class"] = override[0] if override else None
        return plan
    concept_class = getattr(pipe, "concept_class", None)
    classes = {c: concept_class(c) if concept_class else None for c in forget}
    if concept_class is not None and any(v is None for v in classes.values()):
        unknown = [c for c, v in classes.items() if v is None]
        raise GuardgenError(f"unknown concept {unknown[0]!r} for this model; it knows phrasings such as "
                            f"{pipe.config.prompts['7'][0]!r} (see the model card)")
    forgotten_classes = set(classes.values())
    table = getattr(pipe.config, "prompts", {}) or {}
    if expand and concept_class is not None:
        extra = [p for c in sorted(table, key=int) if int(c) in forgotten_classes for p in table[c] if p not in forget]
        forget = forget + extra
        classes.update({p: concept_class(p) for p in extra})
        plan["forget"] = forget
    retain = retain or [p for c, ps in table.items() if int(c) not in forgotten_classes for p in ps]
    if not retain and require_retain:
        raise GuardgenError("no retained prompts: pass --retain for a text model without a prompt table")
    plan["retain"] = retain
    if concept_class is None:  # a user text model: no oracle mapping
        plan.update(forget_map=None, retain_map=None, paraphrase_map=None, override_class=None)
        return plan
    heldout = getattr(pipe.config, "heldout_prompts", {}) or {}
    plan["forget_map"] = classes
    plan["retain_map"] = {table[c][0]: int(c) for c in sorted(table, key=int) if int(c) not in forgotten_classes}
    plan["paraphrase_map"] = {p: int(c) for c in heldout if int(c) in forgotten_classes for p in heldout[c]}
    plan["override_class"] = concept_class(override[0]) if override else None
    return plan


def evaluate_before_after(original, unlearned, oracle, plan: dict, *, per_condition: int = 50, seed: int = 0,
                          grid=None, original_steps: int = 50, original_guidance: float = 1.0, before: dict | None = None) -> dict:
    """The figures of :func:`evaluate_concept_unlearning` for the original and the unlearned model, and a grid PNG."""
    from guardgen.data import load_mnist, save_grid
    from guardgen.models.diffusion import sample_images

    if plan.get("forget_map") is None:
        return {"before": {}, "after": {}, "note": "no oracle mapping for these prompts; not scored"}
    forgotten = set(plan["forget_map"].values())
    real = load_mnist("test").exclude(forgotten).images
    out = {} if before is None else {"before": before}
    for name, pipe in (("before", original), ("after", unlearned)):
        if name in out:
            continue

        def sample_fn(conds, pipe=pipe):
            return sample_images(pipe, conds, num_inference_steps=original_steps, guidance_scale=original_guidance, seed=seed)

        out[name] = evaluate_concept_unlearning(sample_fn, oracle, forget=plan["forget_map"], retain=plan["retain_map"],
                                                paraphrases=plan["paraphrase_map"], per_condition=per_condition, real_retained=real,
                                                override_class=plan.get("override_class"))
    if grid is not None:
        rows = (list(plan["forget_map"]) + list(plan["retain_map"]))[:10]
        n = 6
        tiles = []
        for c in rows:
            before = sample_images(original, [c] * n, num_inference_steps=original_steps, guidance_scale=original_guidance, seed=seed + 1)
            after = sample_images(unlearned, [c] * n, num_inference_steps=original_steps, guidance_scale=original_guidance, seed=seed + 1)
            tiles += [before, after]
        save_grid(torch.cat(tiles), grid, nrow=2 * n)
    return out


def evaluate_redaction(original, redacted, oracle, *, redacted_prompts: dict, reference_class: int, paraphrases: dict | None = None,
                       retained_prompts: Sequence = (), per_prompt: int = 20, steps: int = 50, seed: int = 0,
                       guidance_scale: float = 1.0, cache: dict | None = None) -> dict:
    """Score a redaction with the oracle, on the same seeds for both models.

    redacted_prompts / paraphrases: prompt -> the class it depicts originally. Returns the share of their
    samples the redacted model renders as ``reference_class`` (redaction rate), the same for held-out
    paraphrases, the original model's rates beside them, and the agreement (same oracle label, same
    seed) of the two models on the retained (non-redacted) prompts. Both models sample with the same
    classifier-free ``guidance_scale``.
    """
    from guardgen.models.diffusion import sample_images

    paraphrases = paraphrases or {}
    groups = {"redacted": list(redacted_prompts), "paraphrase": list(paraphrases), "retained": list(retained_prompts)}
    preds = cache if cache is not None else {}
    for name, pipe in (("original", original), ("redacted", redacted)):
        for group, prompts in groups.items():
            if prompts and not (name == "original" and (name, group) in preds):
                conds = [p for p in prompts for _ in range(per_prompt)]
                images = sample_images(pipe, conds, num_inference_steps=steps, guidance_scale=guidance_scale, seed=seed)
                preds[name, group] = predict_logits(oracle, images).argmax(1)
    out = {"per_prompt": per_prompt, "steps": steps, "guidance_scale": guidance_scale}
    concepts = {"redacted": redacted_prompts, "paraphrase": paraphrases}
    for name in ("original", "redacted"):
        for group in ("redacted", "paraphrase"):
            if (name, group) in preds:
                p = preds[name, group]
                concept = torch.tensor([concepts[group][c] for c in groups[group] for _ in range(per_prompt)])
                out[f"{group}_reference_rate_{name}"] = (p == reference_class).float().mean().item()
                out[f"{group}_concept_rate_{name}"] = (p == concept).float().mean().item()
    if ("original", "retained") in preds:
        out["retained_agreement"] = (preds["original", "retained"] == preds["redacted", "retained"]).float().mean().item()
    return out
