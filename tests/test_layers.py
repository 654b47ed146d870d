"""The import order of DESIGN.md, enforced by an AST walk over every library module."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = ("guardgen.models", "guardgen.data", "guardgen.zoo", "guardgen.metrics", "guardgen.copyright",
              "guardgen.checkpoint", "guardgen.registry", "guardgen.errors", "guardgen.utils")
METHODS = ("attacks", "detectors", "unlearn")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violation(module: str, imported: str) -> str | None:
    top = imported.split(".")[0]
    if imported.startswith(("guardgen.cli", "guardgen.audit")) and not module.startswith(("guardgen.cli", "guardgen.audit")):
        return "only the application layer imports guardgen.cli / guardgen.audit"
    if module.startswith(FOUNDATION) or module == "guardgen":
        if top in METHODS:
            return "the foundation imports no method package"
    if module.startswith("attacks") and top in ("detectors", "unlearn"):
        return "attacks imports neither detectors nor unlearn"
    if module.startswith("unlearn") and top in ("attacks", "detectors"):
        return "unlearn imports neither attacks nor detectors"
    return None


def _modules():
    for package in ("guardgen", *METHODS):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def test_imports_follow_the_layers():
    problems = []
    for module, path in _modules():
        for line, imported in _imports(path):
            why = violation(module, imported)
            if why:
                problems.append(f"{path.relative_to(ROOT)}:{line}: import {imported}: {why}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module,imported,bad", [
    ("guardgen.models.diffusion", "unlearn.sfd", True),
    ("attacks.worst_case_forget", "unlearn", True),
    ("unlearn.sfd", "detectors.omat", True),
    ("detectors.omat", "attacks.on_manifold", False),
    ("guardgen.cli.unlearn", "unlearn.sfd", False),
    ("guardgen.metrics.fd", "guardgen.cli", True),
])
def test_the_checker_itself(module, imported, bad):
    assert (violation(module, imported) is not None) == bad


def test_heavy_libraries_are_not_imported_by_the_cli_entry():
    import subprocess
    import sys

    code = "import sys, guardgen.cli; print(sorted(m for m in ('diffusers','timm','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
