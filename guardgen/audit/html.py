"""The self-contained HTML report: inline CSS, plots and grids as base64 PNG, no script, no network.

Every piece of user text (model spec, concept names, paths) goes through :func:`esc`.
"""

from __future__ import annotations

import base64

from guardgen.audit._base import ORDER, TITLES
from guardgen.audit._format import esc, flat_figures, fmt, thresholds_text
from guardgen.audit.plots import grid_png, plot_png
from guardgen.audit.summary import key_figure

__all__ = ["render_html"]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:24px}
header{background:#1d2330;color:#fff;padding:20px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0;font-size:13px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:18px;margin:0 0 8px}h3{font-size:14px;margin:14px 0 6px;color:#4a5366}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0;width:100%}
td,th{border:1px solid #e3e7ee;padding:3px 7px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#f0f2f6}table.kv td:first-child{width:30%;white-space:nowrap}
.badge{display:inline-block;white-space:nowrap;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;margin-left:8px;vertical-align:middle}
.pass{background:#d9f2e1;color:#11612d}.warn{background:#fff0c7;color:#7a5300}.fail{background:#fbd9d7;color:#8f1d16}
.info{background:#e3ebfa;color:#23427a}.not-run{background:#e9e9ec;color:#555}
.why{color:#6b7385;font-style:italic}.plots img{max-width:100%;margin:4px 8px 4px 0;border:1px solid #eee}
.grid img{image-rendering:pixelated;border:1px solid #ddd;max-width:100%}
ul.lim{font-size:12.5px;color:#4a5366}code{font-size:12px}
"""


def _badge(status: str) -> str:
    return f'<span class="badge {esc(status.replace(" ", "-"))}">{esc(status)}</span>'


def _table(rows: list[dict], css: str = "") -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _png(data: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _section(name: str, s, verdict: dict) -> str:
    status = verdict.get("status", "info") if name != "provenance" else "info"
    parts = [f'<section id="{name}" class="report-section"><h2>{esc(TITLES[name])}{_badge(s.status if s.status != "ran" else status)}</h2>']
    if s.status != "ran":
        parts.append(f'<p class="why">not run: {esc(s.why)}</p>')
    figs = flat_figures(s.figures)
    if figs:
        parts.append(_table([{"figure": k, "value": v} for k, v in figs], css="kv"))
    for tname, rows in s.tables.items():
        if rows:
            parts.append(f"<h3>{esc(tname.replace('_', ' '))}</h3>{_table(rows)}")
    if s.plots:
        parts.append('<div class="plots">' + "".join(_png(plot_png(p, k.replace("_", " ")), k) for k, p in s.plots.items()) + "</div>")
    for iname, (images, nrow, caption) in s.images.items():
        parts.append(f'<h3>{esc(caption)}</h3><div class="grid">{_png(grid_png(images, nrow), iname)}</div>')
    if s.limitations:
        parts.append('<h3>limitations</h3><ul class="lim">' + "".join(f"<li>{esc(x)}</li>" for x in s.limitations) + "</ul>")
    parts.append(f'<p class="why">{s.seconds:.1f} s</p></section>')
    return "".join(parts)


def render_html(report: dict, sections: dict) -> str:
    """report: the JSON dict; sections: name -> Section (for images). Returns one HTML document."""
    v = report["verdicts"]
    summary = [{"section": TITLES[n], "verdict": v["sections"].get(n, {}).get("status", "info") if n != "provenance" else "info",
                "why / key figure": key_figure(n, sections[n])} for n in ORDER if n in sections]
    rows = "".join(f"<tr><td><a href=\"#{esc(n)}\">{esc(TITLES[n])}</a></td><td>{_badge(r['verdict'])}</td><td>{esc(r['why / key figure'])}</td></tr>"
                   for n, r in zip([n for n in ORDER if n in sections], summary))
    checks = "".join(f"<tr><td>{esc(c['section'])}</td><td>{esc(c['metric'])}</td><td>{esc(fmt(c['value']))}</td>"
                     f"<td>{_badge(c['status'])}</td><td>{esc(thresholds_text(c['threshold']))}</td><td>{esc(c.get('note', ''))}</td></tr>"
                     for c in v["checks"])
    lim = "".join(f"<li><b>{esc(TITLES[n])}</b>: {esc(' '.join(x['limitations']))}</li>" for n, x in v["sections"].items() if x.get("limitations"))
    body = "".join(_section(n, sections[n], v["sections"].get(n, {})) for n in ORDER if n in sections)
    verdicts = (f'<section id="verdicts" class="report-section"><h2>{esc(TITLES["verdicts"])}{_badge(v["overall"])}</h2>'
                f"<table><thead><tr><th>section</th><th>metric</th><th>value</th><th>verdict</th><th>thresholds</th><th>note</th></tr></thead>"
                f"<tbody>{checks}</tbody></table><h3>limitations of each test</h3><ul class=\"lim\">{lim}</ul>"
                f"<p class=\"why\">thresholds are user-changeable: --config FILE.json or --set thresholds.SECTION.METRIC.warn=VALUE</p></section>")
    meta = report["model"]
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>guardgen audit: {esc(meta['spec'])}</title><style>{CSS}</style></head><body>"
        f"<header><h1>guardgen audit: {esc(meta['spec'])} {_badge(v['overall'])}</h1>"
        f"<p>{esc(report['created'])} &middot; guardgen {esc(report['guardgen_version'])} &middot; schema "
        f"{esc(report['schema'])} v{esc(report['schema_version'])} &middot; seed {esc(report['config']['seed'])} &middot; "
        f"{esc(fmt(report['seconds']))} s</p></header><main>"
        f"<section id=\"summary\" class=\"report-section\"><h2>Summary</h2><table><thead><tr><th>section</th><th>verdict</th><th>key figure, or why not run</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p>Reproduce: <code>{esc(report['command'])}</code></p></section>"
        f"{body}{verdicts}</main></body></html>\n"
    )
