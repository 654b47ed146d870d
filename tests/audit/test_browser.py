"""The HTML report in a real browser: headless Chromium renders it, with no console error, every section visible."""

import os
from pathlib import Path

import pytest

from _audit_chromium import ensure_chromium, render

SECTIONS = ("summary", "provenance", "quality", "leakage", "memorization", "membership", "copyright", "forensics", "verdicts")
CHECK = """(() => { const ids = %s; const out = {};
  for (const id of ids) { const el = document.getElementById(id);
    if (!el) { out[id] = 'missing'; continue; }
    const r = el.getBoundingClientRect(), st = getComputedStyle(el);
    out[id] = (r.height > 20 && r.width > 200 && st.display !== 'none' && st.visibility !== 'hidden') ? 'visible' : 'hidden'; }
  out.__images = [...document.images].map(i => i.complete && i.naturalWidth > 0);
  out.__scripts = document.scripts.length;
  return out; })()""" % list(SECTIONS).__repr__()

ARTIFACTS = Path(os.environ.get("GUARDGEN_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "runs" / "test-artifacts"))


@pytest.fixture(scope="module")
def browser():
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"no headless browser: {why}")
    return path


def test_report_renders_in_chromium(zoo_report, browser):
    out, _, _ = zoo_report
    shot = ARTIFACTS / "audit-report.png"
    result = render(out / "report.html", shot, browser=browser, selectors_js=CHECK)
    assert result["errors"] == [], result["errors"]
    check = result["check"]
    assert {k: v for k, v in check.items() if not k.startswith("__")} == {s: "visible" for s in SECTIONS}
    assert check["__images"] and all(check["__images"])  # every inline PNG decoded
    assert check["__scripts"] == 0
    assert shot.stat().st_size > 10_000
