"""The one-line key figure of each section, shared by the HTML summary and the terminal table."""

from __future__ import annotations

from guardgen.audit._format import fmt

__all__ = ["key_figure"]


def key_figure(name: str, s) -> str:
    """A short text with the figure a reviewer reads first (or why the section did not run)."""
    if s.status != "ran":
        return f"not run: {s.why}"
    f = s.figures
    if name == "provenance":
        return f"{f['model_kind']}, {f['parameters']:,} parameters, sha256 {f['sha256'][:12]}, lineage: {f['lineage']['kind']}"
    if name == "quality":
        return f"FD(oracle) {fmt(f.get('fd_oracle'))} (real vs real {fmt(f.get('fd_real_split'))}), conditional accuracy {fmt(f.get('conditional_accuracy'))}, recall {fmt(f.get('recall'))}"
    if name == "leakage":
        parts = []
        for c in f.get("concepts", []):
            text = f"{c['concept']}: {fmt(c['audited']['forget_rate'])}"
            if "original" in c:
                text += f" (original {fmt(c['original']['forget_rate'])})"
            parts.append(text)
        return "forget rate " + "; ".join(parts)
    if name == "memorization":
        text = f"extraction rate {fmt(f['extraction_rate'])} of {f['samples']} samples"
        if "holdout_extraction_rate" in f:
            text += f" (held-out real {fmt(f['holdout_extraction_rate'])})"
        if f.get("auth_pct") is not None:
            text += f", AuthPct {fmt(f['auth_pct'])}%"
        if f.get("ct_score") is not None:
            text += f", C_T {fmt(f['ct_score'])}"
        return text
    if name == "membership":
        return f"AUROC {fmt(f['auroc'])} ({f['strongest_attack']}), TPR@1%FPR {fmt(f['tpr_at_1pct_fpr'])}"
    if name == "copyright":
        return f"effective k {fmt(f.get('effective_k'))}, acceptance {fmt(f.get('acceptance'))}"
    if name == "forensics":
        parts = []
        if "detection_rate" in f:
            parts.append(f"detected {fmt(f['detection_rate'])}")
        if isinstance(f.get("attribution"), dict):
            parts.append(f"attributed to {f['attribution']['top_source']} ({fmt(f['attribution']['top_share'])})")
        return ", ".join(parts)
    return ""
