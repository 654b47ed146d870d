"""Section 7, forensics: how detectable the model's samples are, and to which source they are attributed."""

from __future__ import annotations

import torch

from guardgen.audit._base import Section, not_run
from guardgen.errors import GuardgenError

__all__ = ["check_forensics_inputs", "forensics_section"]

LIMITATIONS = [
    "A detector is only as good as the generators it was trained on; a low detection rate on a new model is the "
    "expected failure of detectors out of distribution, and a high one may not survive post-processing or attacks.",
    "Attribution is closed-set for the known sources plus 'unknown'; an unknown label says only that no known source fits.",
]


def forensics_section(pool: dict, real, *, detector: str | None, attribution: str | None) -> Section:
    if not detector and not attribution:
        return not_run("forensics", "no detector (--detector) or attribution model (--attribution) given", LIMITATIONS)
    images = pool["images"]
    figures, tables, plots = {}, {}, {}
    if detector:
        from detectors.detector import Detector
        from guardgen.metrics import auroc

        det = Detector.from_pretrained(_folder(detector, "--detector"))
        p = det.predict_proba(images)
        figures.update({"detector": detector, "detection_rate": float((p > det.threshold).float().mean()),
                        "mean_p_fake": float(p.mean()), "detector_threshold": det.threshold})
        if real is not None:
            pr = det.predict_proba(real.images)
            figures["real_false_positive_rate"] = float((pr > det.threshold).float().mean())
            y = torch.cat([torch.ones(len(p)), torch.zeros(len(pr))])
            figures["auroc_samples_vs_real"] = auroc(y, torch.cat([p, pr]))
            plots["p_fake"] = {"kind": "hist", "series": {"samples": p.tolist(), "held-out real": pr.tolist()},
                               "threshold": det.threshold, "xlabel": "detector p(fake)", "ylabel": "share"}
    if attribution:
        from detectors.attribution import OpenWorldAttribution

        attr = OpenWorldAttribution.from_pretrained(_folder(attribution, "--attribution"))
        try:
            names = attr.predict_names(images)
        except GuardgenError as err:
            figures["attribution"] = f"not run: {err}"
        else:
            counts = {n: names.count(n) for n in dict.fromkeys(sorted(names))}
            figures["attribution"] = {"model": attribution, "counts": counts,
                                      "top_source": max(counts, key=counts.get), "top_share": max(counts.values()) / len(names)}
            tables["attribution"] = [{"source": k, "samples": v, "share": v / len(names)} for k, v in counts.items()]
            plots["attribution"] = {"kind": "bars", "labels": list(counts), "values": list(counts.values()),
                                    "xlabel": "attributed source", "ylabel": "samples"}
    return Section(name="forensics", figures=figures, tables=tables, plots=plots, limitations=LIMITATIONS)


def check_forensics_inputs(detector: str | None, attribution: str | None) -> None:
    """Cheap checks of --detector and --attribution (a folder, its config.json of the right kind, its weight
    files), before any section runs; the full load happens in the section."""
    from guardgen.checkpoint import load_json

    for spec, option, what, how, weights in ((detector, "--detector", "detector", "guardgen detect train", ("model",)),
                                             (attribution, "--attribution", "attribution model", "guardgen attribute fit",
                                              ("model", "ood"))):
        if not spec:
            continue
        path = _folder(spec, option)
        config = load_json(path / "config.json") if (path / "config.json").is_file() else None
        if option == "--detector":
            ok = isinstance(config, dict) and "detector" in config and "preprocessing" in config
        else:
            ok = isinstance(config, dict) and config.get("_class") == "OpenWorldAttribution"
        if not ok:
            raise GuardgenError(f"{option} {spec}: not a guardgen {what} folder (no config.json of one); make one "
                                f"with `{how}`")
        missing = [f"{name}.safetensors" for name in weights if not (path / f"{name}.safetensors").is_file()]
        if missing:
            raise GuardgenError(f"{option} {spec}: no {', '.join(missing)} beside config.json")


def _folder(spec: str, option: str):
    from pathlib import Path

    from guardgen.checkpoint import PICKLE_SUFFIXES

    path = Path(spec).expanduser()
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        raise GuardgenError(f"{option} {spec}: a pickle file; guardgen never unpickles checkpoints (pass a folder with .safetensors)")
    if not path.is_dir():
        raise GuardgenError(f"{option} {spec}: no such folder")
    return path
