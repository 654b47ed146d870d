"""Writing a report folder: ``report.json`` (versioned schema), ``report.html``, ``report.md``, ``images/*.png``.

Every file is written atomically, and ``report.json`` last, so a folder with a report.json holds a
complete report.
"""

from __future__ import annotations

import json
from pathlib import Path

from guardgen.audit.html import render_html
from guardgen.audit.markdown import render_markdown
from guardgen.audit.plots import grid_png, plot_png
from guardgen.checkpoint import atomic_path

__all__ = ["write_report"]


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # mkstemp makes 0600; a report is meant to be shared


def write_report(report: dict, sections: dict, out: str | Path) -> dict[str, Path]:
    """Write the report folder; returns the paths of report.json/html/md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").unlink(missing_ok=True)  # an interrupted rewrite must not look complete
    for name, s in sections.items():
        for pname, spec in s.plots.items():
            _write_bytes(out / "images" / f"{name}-{pname}.png", plot_png(spec, pname.replace("_", " ")))
        for iname, (images, nrow, _) in s.images.items():
            _write_bytes(out / "images" / f"{name}-{iname}.png", grid_png(images, nrow))
    paths = {"html": out / "report.html", "md": out / "report.md", "json": out / "report.json"}
    _write_bytes(paths["html"], render_html(report, sections).encode("utf-8"))
    _write_bytes(paths["md"], render_markdown(report, sections).encode("utf-8"))
    from guardgen.checkpoint import _jsonable

    _write_bytes(paths["json"], (json.dumps(_jsonable(report), indent=2) + "\n").encode("utf-8"))
    return paths
