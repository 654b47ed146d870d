"""The Markdown report: the same sections as the HTML, images as files under ``images/``."""

from __future__ import annotations

import re

from guardgen.audit._base import ORDER, TITLES
from guardgen.audit._format import esc, flat_figures, fmt, thresholds_text
from guardgen.audit.summary import key_figure

__all__ = ["render_markdown"]


def _cell(text) -> str:
    return esc(fmt(text) if not isinstance(text, str) else text).replace("|", "\\|").replace("\n", " ")


def _code(text) -> str:
    """``text`` as a Markdown code span, shown literally: no HTML escapes (a code span shows them as typed; CommonMark
    escapes its content), fenced by one backtick more than the longest run inside."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(_cell(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return out + [""]


def render_markdown(report: dict, sections: dict) -> str:
    v = report["verdicts"]
    lines = [f"# guardgen audit: {_code(report['model']['spec'])} ({v['overall']})", "",
             f"{report['created']} · guardgen {report['guardgen_version']} · schema {report['schema']} v{report['schema_version']}"
             f" · seed {report['config']['seed']} · {report['seconds']:.1f} s", "",
             f"Reproduce: {_code(report['command'])}", "", "## Summary", ""]
    lines += _table([{"section": TITLES[n], "verdict": v["sections"].get(n, {}).get("status", "info") if n != "provenance" else "info",
                      "key figure, or why not run": key_figure(n, sections[n])} for n in ORDER if n in sections])
    for name in ORDER:
        s = sections.get(name)
        if s is None:
            continue
        lines += [f"## {TITLES[name]}", ""]
        if s.status != "ran":
            lines += [f"_not run: {esc(s.why)}_", ""]
        lines += _table([{"figure": k, "value": val} for k, val in flat_figures(s.figures)])
        for tname, rows in s.tables.items():
            if rows:
                lines += [f"### {tname.replace('_', ' ')}", ""] + _table(rows)
        for pname in s.plots:
            lines += [f"![{pname}](images/{name}-{pname}.png)", ""]
        for iname, (_, _, caption) in s.images.items():
            lines += [f"{esc(caption)}:", "", f"![{iname}](images/{name}-{iname}.png)", ""]
        if s.limitations:
            lines += ["Limitations:", ""] + [f"- {esc(x)}" for x in s.limitations] + [""]
    lines += [f"## {TITLES['verdicts']}", "", f"Overall: **{v['overall']}**", ""]
    lines += _table([{"section": c["section"], "metric": c["metric"], "value": c["value"], "verdict": c["status"],
                      "thresholds": thresholds_text(c["threshold"]), "note": c.get("note", "")}
                     for c in v["checks"]])
    lines += ["Thresholds are user-changeable: `--config FILE.json` or `--set thresholds.SECTION.METRIC.warn=VALUE`.", ""]
    return "\n".join(lines)
