"""One audit, top to bottom: load the model, draw one sample pool, run the sections in order, judge them."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import torch

from guardgen.audit._base import ORDER, FeatureCache, Section
from guardgen.audit.config import SCHEMA, SCHEMA_VERSION, AuditConfig
from guardgen.errors import GuardgenError
from guardgen.utils import Callback

__all__ = ["run_audit"]


def _zoo_mnist(subject) -> bool:
    specs = [subject.spec, (subject.run or {}).get("original_model") or "", subject.meta.get("zoo") or ""]
    return any(str(s).replace("zoo:", "").startswith("mnist-") for s in specs)


def _load_original(subject):
    """The model an unlearned run started from (its spec, else the path it recorded), or None."""
    from guardgen.audit.subject import load_subject

    run = subject.run or {}
    for spec in (run.get("original_model"), run.get("original_path")):
        if not spec:
            continue
        try:
            return load_subject(str(spec), guidance_scale=subject.guidance_scale)
        except GuardgenError:
            continue
    return None


def _split_concept(subject, concept: str) -> str:
    """``"a phrase=7"`` names the oracle class of a phrase the model has no table for; returns the phrase."""
    phrase, sep, cls = concept.rpartition("=")
    if sep and phrase.strip() and cls.strip().isdigit() and subject.cond_kind == "text":
        subject.concept_classes[phrase.strip()] = int(cls)
        return phrase.strip()
    return concept


def run_audit(
    spec: str,
    *,
    concepts: list[str] = (),
    train_data: str | None = None,
    holdout_data: str | None = None,
    oracle: str | None = "zoo:mnist-oracle",
    detector: str | None = None,
    attribution: str | None = None,
    shards: list[str] = (),
    config: AuditConfig | None = None,
    callback: Callback | None = None,
    command: str = "",
) -> tuple[dict, dict[str, Section]]:
    """Audit the generative model at ``spec``; returns ``(report dict, {section name: Section})``.

    ``callback(step, logs)`` is called as sections start and end, with ``logs = {"section", "event",
    "total", "seconds"}``; the library never prints.
    """
    from guardgen.audit.copyright import check_shards, copyright_section
    from guardgen.audit.forensics import check_forensics_inputs, forensics_section
    from guardgen.audit.leakage import leakage_section
    from guardgen.audit.membership import membership_section
    from guardgen.audit.memorization import memorization_section
    from guardgen.audit.provenance import provenance_section, tensor_sha256
    from guardgen.audit.quality import quality_section
    from guardgen.audit.subject import load_data, load_subject
    from guardgen.audit.verdicts import verdicts_section
    from guardgen.utils import seed_everything

    config = config or AuditConfig()
    config.validate()
    check_forensics_inputs(detector, attribution)  # cheap checks first: a typo costs no model load
    check_shards(list(shards))
    t_start = time.perf_counter()
    seed_everything(config.seed)
    subject = load_subject(spec, guidance_scale=config.guidance_scale)
    original = _load_original(subject) if subject.run else None
    judge = None
    if oracle:
        from guardgen.models import load_model

        judge = load_model(oracle, kind="classifier")

    # inputs are checked before anything slow runs
    check_shards(list(shards), subject)
    forgotten = list((subject.run or {}).get("forget") or [])
    concepts = [_split_concept(subject, str(c)) for c in concepts] or [str(f) for f in forgotten]
    num_classes = getattr(judge, "num_classes", None)
    for c in concepts:
        cond = subject.parse(c)
        cls = subject.concept_class(cond)
        if judge is not None and cls is None:
            raise GuardgenError(f"concept {c!r}: no oracle class known for it on {spec}; use a class id or one of the "
                                "model's phrasings (see its model card)")
        if isinstance(num_classes, int) and cls is not None and not 0 <= cls < num_classes:
            raise GuardgenError(f"concept {c!r}: oracle class {cls} is out of range; the oracle {oracle} has "
                                f"{num_classes} classes (0..{num_classes - 1})")
    conditions = subject.quality_conditions(concepts)
    forgotten_classes = sorted({k for f in forgotten if (k := subject.concept_class(subject.parse(str(f)))) is not None})
    if train_data is None and _zoo_mnist(subject):
        train_data = "mnist"
    if holdout_data and not train_data:
        raise GuardgenError(f"--holdout-data {holdout_data}: pass --train-data too (held-out images are the "
                            "non-members compared with the training members)")
    train = holdout = None
    train_description = None
    if train_data:
        exclude = tuple((subject.meta.get("train_config") or {}).get("exclude") or ())
        train, holdout, train_description = load_data(train_data, subject.image_shape, exclude=exclude)
        if holdout_data:  # "mnist" here means its test split
            first, second, _ = load_data(holdout_data, subject.image_shape, option="--holdout-data")
            holdout = second if second is not None else first

    features = FeatureCache(judge) if judge is not None else None
    setup_seconds = time.perf_counter() - t_start
    sections: dict[str, Section] = {}
    total = len(ORDER)

    def timed(i: int, name: str, fn):
        if callback is not None:
            callback(i, {"section": name, "event": "start", "total": total})
        t0, c0 = time.perf_counter(), time.process_time()
        s = fn()
        s.seconds = time.perf_counter() - t0
        s.cpu_seconds = time.process_time() - c0
        sections[name] = s
        if callback is not None:
            callback(i + 1, {"section": name, "event": "done", "total": total, "seconds": s.seconds, "status": s.status})

    timed(0, "provenance", lambda: provenance_section(subject, config=config, train_description=train_description,
                                                    train_hash=tensor_sha256(train.images) if train is not None else None,
                                                    original=original))
    pool = {}

    def quality():
        if conditions == [None]:
            conds = [None] * config.unconditional_samples
        else:
            conds = [c for c in conditions for _ in range(config.samples_per_class)]
        t0 = time.perf_counter()
        images = subject.sample(conds, steps=config.num_inference_steps, seed=config.seed, batch_size=config.batch_size)
        seconds = time.perf_counter() - t0
        known = {c: subject.concept_class(c) if c is not None else None for c in set(conds)}
        classes = torch.tensor([-1 if known[c] is None else known[c] for c in conds], dtype=torch.long)
        pool.update(images=images, conditions=conds, classes=classes, samples_per_second=len(conds) / max(seconds, 1e-9),
                    oracle_spec=oracle)
        real = holdout if holdout is not None else train
        return quality_section(subject, pool, judge, real, forgotten_classes=forgotten_classes, features=features)

    timed(1, "quality", quality)
    timed(2, "leakage", lambda: leakage_section(subject, original, concepts, judge, config=config, forgotten=forgotten))
    timed(3, "memorization", lambda: memorization_section(pool, train, holdout, judge, config=config, features=features))
    timed(4, "membership", lambda: membership_section(subject, pool, train, holdout, config=config))
    timed(5, "copyright", lambda: copyright_section(subject, list(shards), sorted(set(pool["conditions"]), key=str)
                                                    if pool["conditions"][0] is not None else [None], config=config))
    timed(6, "forensics", lambda: forensics_section(pool, holdout if holdout is not None else train, detector=detector,
                                                    attribution=attribution))
    verdicts = verdicts_section(sections, config.thresholds)
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "guardgen_version": sections["provenance"].figures["guardgen_version"],
        "command": command or f"guardgen audit {spec}",
        "model": {"spec": spec, "kind": subject.kind, "conditioning": subject.cond_kind,
                  "original": (subject.run or {}).get("original_model"), "original_loaded": original is not None},
        "inputs": {"concepts": concepts, "train_data": train_data, "holdout_data": holdout_data, "oracle": oracle,
                   "detector": detector, "attribution": attribution, "shards": list(shards)},
        "config": config.to_dict(),
        "sections": {name: s.to_json() for name, s in sections.items()},
        "verdicts": verdicts,
        "timings": {"setup (loading model, oracle, data)": round(setup_seconds, 3),
                    **{name: round(s.seconds, 3) for name, s in sections.items()}},
        "cpu_seconds": {name: round(s.cpu_seconds, 3) for name, s in sections.items()},
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    return report, sections
