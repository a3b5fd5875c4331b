"""Imports run one way: the CLI -> stages -> the shared package. The streaming jobs may call ml to
score; ml and analytics never import the streaming jobs; only the CLI imports ingestion."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streamsight", "ingestion", "streaming_jobs", "ml", "analytics", "streamsight_cli")
ALLOWED = {
    "streamsight": {"streamsight"},
    "ingestion": {"ingestion", "streamsight"},
    "streaming_jobs": {"streaming_jobs", "ml", "streamsight"},
    "ml": {"ml", "streamsight"},
    "analytics": {"analytics", "streamsight"},
    "streamsight_cli": set(PACKAGES),
}


def _project_imports(package: str) -> dict[str, set[str]]:
    """Project packages each module of ``package`` imports (anywhere in it, lazily or not)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            found |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
        out[str(path.relative_to(ROOT))] = found
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_run_one_way(package):
    wrong = {module: sorted(found - ALLOWED[package]) for module, found in _project_imports(package).items()
             if found - ALLOWED[package]}
    assert not wrong, wrong
