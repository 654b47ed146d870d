"""Formatting of figures for the HTML and Markdown writers (numbers, nested values, escaping)."""

from __future__ import annotations

import html
import json

__all__ = ["fmt", "esc", "flat_figures", "thresholds_text"]


def esc(text) -> str:
    """HTML-escape any user text (concept names, paths, specs), quotes included."""
    return html.escape(str(text), quote=True)


def fmt(value) -> str:
    """A figure as short plain text (not escaped)."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        if len(value) > 12:
            return "[" + ", ".join(fmt(v) for v in value[:6]) + f", ... ({len(value)} items)]"
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        text = json.dumps(value, default=str)
        return text if len(text) <= 400 else text[:400] + " ..."
    return str(value)


SKIP = {"files", "roc", "concepts", "attacks", "cell_z", "unet_config"}


def flat_figures(figures: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested figures -> (key, text) rows, one level of nesting flattened with dots; bulky keys left to tables."""
    rows = []
    for key, value in figures.items():
        if key in SKIP:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not prefix and len(value) <= 12:
            rows += flat_figures(value, prefix=f"{name}.")
        else:
            rows.append((name, fmt(value)))
    return rows


def thresholds_text(t: dict) -> str:
    """``{"warn", "fail", "bad"}`` -> "warn above 0.6, fail above 0.75" (or "not judged")."""
    if t.get("warn") is None or t.get("fail") is None:
        return "not judged (no thresholds set)"
    return f"warn {t['bad']} {fmt(t['warn'])}, fail {t['bad']} {fmt(t['fail'])}"
