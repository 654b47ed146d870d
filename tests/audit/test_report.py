"""The report of a real zoo model: versioned schema, every section, verdicts, files, seeds."""

import json

from guardgen.audit import SCHEMA, SCHEMA_VERSION
from guardgen.audit._base import ORDER

HOSTILE = "<script>alert(1)</script>"  # the concept name the shared report (conftest.zoo_report) is built with


def test_report_has_schema_sections_and_verdicts(zoo_report):
    out, report, output = zoo_report
    assert report["schema"] == SCHEMA and report["schema_version"] == SCHEMA_VERSION
    assert list(report["sections"]) == list(ORDER)
    ran = {n for n, s in report["sections"].items() if s["status"] == "ran"}
    assert ran == {"provenance", "quality", "leakage", "memorization", "membership"}
    for name in ("copyright", "forensics"):  # not given: not run, with why
        assert report["sections"][name]["why"]
    assert report["verdicts"]["overall"] in ("pass", "warn", "fail")
    assert all(s["limitations"] for s in report["sections"].values())
    for path in ("report.html", "report.md", "images/quality-samples.png", "images/memorization-closest_pairs.png",
                 "images/membership-roc.png"):
        assert (out / path).stat().st_size > 0
    assert "overall" in output and "Memorization" in output  # the terminal summary table


def test_provenance_hashes_the_weights(zoo_report):
    import hashlib

    from guardgen.zoo import zoo_path

    _, report, _ = zoo_report
    prov = report["sections"]["provenance"]["figures"]
    weights = next(f for f in prov["files"] if f["file"].endswith(".safetensors"))
    path = zoo_path("mnist-t2i") / weights["file"]
    assert weights["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["parameters"] > 100_000 and prov["lineage"]["kind"] == "zoo model"
    assert prov["conditioning"] == "text"
    assert prov["seed"] == 0 and prov["guardgen_version"]


def test_quality_and_leakage_on_the_zoo_model(zoo_report):
    _, report, _ = zoo_report
    q = report["sections"]["quality"]["figures"]
    assert q["conditional_accuracy"] >= 0.7 and q["fd_oracle"] > 0
    hostile, seven = report["sections"]["leakage"]["figures"]["concepts"]
    assert hostile["oracle_class"] == 7 and seven["oracle_class"] == 7
    assert seven["audited"]["forget_rate"] >= 0.5  # the original draws its 7s
    assert len(seven["paraphrases"]) >= 3 and seven["audited"]["paraphrase_forget_rate"] >= 0.5
    checks = [c for c in report["verdicts"]["checks"] if c["section"] == "leakage"]
    assert checks and all(c["status"] == "info" for c in checks)  # not forgotten by this model: not judged


def test_json_is_strict_and_reproducible_settings(zoo_report):
    out, report, _ = zoo_report
    text = (out / "report.json").read_text()
    json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))  # no NaN/Infinity
    assert report["config"]["samples_per_class"] == 3 and report["config"]["mia_timesteps"] == [100]
    import shlex

    argv = shlex.split(report["command"])  # the exact command that reproduces the report
    assert argv[:3] == ["guardgen", "audit", "zoo:mnist-t2i"] and argv.count("--concept") == 2
    assert argv[argv.index("--out") + 1] == str(out)


def test_user_text_is_escaped_everywhere(zoo_report):
    out, report, _ = zoo_report
    assert report["inputs"]["concepts"][0] == HOSTILE  # kept verbatim in the JSON
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # Markdown: escaped in text and tables; verbatim only inside a code span (shown literally, so the command copies)
    spans = [line for line in md.splitlines() if "<script" in line]
    assert spans and all(line.startswith("Reproduce: `") for line in spans) and "&lt;script&gt;" in md
    import shlex

    command = spans[0].removeprefix("Reproduce: ").strip("`")
    assert command == report["command"] and any(HOSTILE in arg for arg in shlex.split(command))
