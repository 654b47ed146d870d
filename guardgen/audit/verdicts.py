"""Section 8, verdicts: pass / warn / fail per metric and per section, against the config's thresholds."""

from __future__ import annotations

from guardgen.audit._base import ORDER

__all__ = ["judge", "verdicts_section", "STATUSES"]

STATUSES = ("pass", "warn", "fail", "info", "not run")
RANK = {"not run": 0, "info": 1, "pass": 2, "warn": 3, "fail": 4}


def judge(value, threshold: dict) -> str:
    """One figure against {"warn", "fail", "bad": "above" | "below"}."""
    if value is None or threshold.get("warn") is None or threshold.get("fail") is None:
        return "info"  # no figure, or a metric the config does not judge
    v, warn, fail = float(value), float(threshold["warn"]), float(threshold["fail"])
    if threshold["bad"] == "above":
        return "fail" if v > fail else "warn" if v > warn else "pass"
    return "fail" if v < fail else "warn" if v < warn else "pass"


def _checks(name: str, figures: dict, thresholds: dict) -> list[dict]:
    """(metric, value, threshold) triples of a section that verdicts apply to."""
    t = thresholds.get(name, {})
    out = []
    if name == "leakage":
        for c in figures.get("concepts", []):
            for metric in ("forget_rate", "paraphrase_forget_rate"):
                value = c["audited"].get(metric)
                if value is None or metric not in t:
                    continue
                status = judge(value, t[metric]) if c.get("forgotten_by_run") else "info"
                out.append({"metric": f"{metric} [{c['concept']}]", "value": value, "status": status, "threshold": t[metric],
                            "note": "" if c.get("forgotten_by_run") else "concept not forgotten by this model: reported, not judged"})
        return out
    for metric, th in t.items():
        if figures.get(metric) is not None:
            out.append({"metric": metric, "value": figures[metric], "status": judge(figures[metric], th), "threshold": th})
    return out


def verdicts_section(sections: dict, thresholds: dict) -> dict:
    """sections: name -> Section. Returns {"overall", "sections": {name: {...}}, "checks": [...]}."""
    per_section, checks = {}, []
    for name in ORDER:
        s = sections.get(name)
        if s is None or name == "provenance":
            continue
        if s.status != "ran":
            per_section[name] = {"status": "not run", "why": s.why, "limitations": s.limitations}
            continue
        rows = _checks(name, s.figures, thresholds)
        for r in rows:
            r["section"] = name
        checks += rows
        status = max((r["status"] for r in rows), key=RANK.get, default="info")
        per_section[name] = {"status": status, "limitations": s.limitations}
    judged = [v["status"] for v in per_section.values() if v["status"] in ("pass", "warn", "fail")]
    overall = max(judged, key=RANK.get, default="info")
    return {"overall": overall, "sections": per_section, "checks": checks, "thresholds": thresholds}
