"""Section 3, concept leakage: does the model still draw a concept, under its own name and under paraphrases?

For each concept (a class id or a phrase) the forget rate is the share of samples drawn for it that the
oracle classifies as the concept; held-out paraphrases (phrasings never used in training or unlearning)
measure leakage around the name. For an unlearned run, the original model gets the same figures on the
same seeds, side by side, with a Fisher exact test of the difference.
"""

from __future__ import annotations

from guardgen.audit._base import Section, not_run
from guardgen.errors import GuardgenError

__all__ = ["leakage_section"]

LIMITATIONS = [
    "The oracle decides what counts as the concept: a drawing the oracle misreads counts as forgotten.",
    "Paraphrases are the model's held-out phrasings only; adversarial prompts (see `guardgen attack`) can find more.",
    "For unconditional models the rate is the concept's share among unconditional samples, not a conditional rate.",
]


def leakage_section(subject, original, concepts: list, oracle, *, config, forgotten: list) -> Section:
    """concepts: user strings; forgotten: the run's forgotten conditions (verdicts apply to those)."""
    if not concepts:
        return not_run("leakage", "no --concept given and the model records no forgotten concept", LIMITATIONS)
    if oracle is None:
        return not_run("leakage", "no oracle classifier (--oracle) to tell whether a sample shows the concept", LIMITATIONS)
    forgotten_set = {str(f).strip().lower() for f in forgotten or []}
    rows, figures = [], {"concepts": []}
    n = config.concept_samples
    for i, concept in enumerate(concepts):
        cond = subject.parse(concept)
        cls = subject.concept_class(cond)
        if cls is None:
            raise GuardgenError(f"concept {concept!r}: no oracle class known for it on {subject.spec}; use a class id "
                                "or one of the model's phrasings (see its model card)")
        paraphrases = subject.paraphrases(cond) if subject.cond_kind == "text" else []
        entry = {"concept": str(concept), "condition": cond, "oracle_class": cls, "paraphrases": paraphrases,
                 "forgotten_by_run": str(concept).strip().lower() in forgotten_set or str(cond).lower() in forgotten_set}
        seed = config.seed + 1000 * (i + 1)
        for label, model in (("audited", subject), ("original", original)):
            if model is None:
                continue
            rate, para, count = _rates(model, cond, cls, paraphrases, n, seed, oracle, config)
            entry[label] = {"forget_rate": rate, "paraphrase_forget_rate": para, "samples": count}
            rows.append({"concept": str(concept), "model": label, "forget_rate": rate,
                         "paraphrase_forget_rate": para if para is not None else "n/a"})
        if original is not None:
            a, o = entry["audited"]["forget_rate"], entry["original"]["forget_rate"]
            entry["reduction"] = o - a
            entry["fisher_p"] = _fisher(a, o, entry["audited"]["samples"])
        figures["concepts"].append(entry)
    figures["compared_with_original"] = original is not None
    plots = {}
    if figures["concepts"]:
        labels = [e["concept"] for e in figures["concepts"]]
        series = {"audited": [e["audited"]["forget_rate"] for e in figures["concepts"]]}
        if original is not None:
            series["original"] = [e["original"]["forget_rate"] for e in figures["concepts"]]
        plots["forget_rates"] = {"kind": "grouped_bars", "labels": labels, "series": series, "ylabel": "forget rate",
                                 "ylim": [0, 1]}
    return Section(name="leakage", figures=figures, tables={"rates": rows}, plots=plots, limitations=LIMITATIONS)


def _rates(model, cond, cls: int, paraphrases: list, n: int, seed: int, oracle, config):
    from guardgen.utils import predict_logits

    if model.cond is None:  # unconditional: the concept's share among unconditional samples
        images = model.sample([None] * (n * 4), steps=config.num_inference_steps, seed=seed, batch_size=config.batch_size)
        return float((predict_logits(oracle, images).argmax(1) == cls).float().mean()), None, len(images)
    conds = [cond] * n + [p for p in paraphrases for _ in range(n)]
    images = model.sample(conds, steps=config.num_inference_steps, seed=seed, batch_size=config.batch_size)
    hits = (predict_logits(oracle, images).argmax(1) == cls).float()
    para = float(hits[n:].mean()) if paraphrases else None
    return float(hits[:n].mean()), para, n


def _fisher(rate_a: float, rate_b: float, n: int) -> float:
    from scipy.stats import fisher_exact

    a, b = round(rate_a * n), round(rate_b * n)
    return float(fisher_exact([[a, n - a], [b, n - b]]).pvalue)
