"""The docs name only what exists, and the architecture page lists every package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_ROOTS = ("peermesh", "certs", "gossip", "chaos", "bench", "examples")
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
REPO_PATH = re.compile(r"`((?:peermesh|certs|gossip|tests|bench|chaos|examples|deploy)/[\w./-]*)")


def packages() -> list[str]:
    found = []
    for top in PACKAGE_ROOTS:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            if "__pycache__" not in init.parts:
                found.append(init.parent.relative_to(ROOT).as_posix())
    return found


@pytest.mark.parametrize("package", packages())
def test_every_package_has_a_line_in_the_architecture_page(package: str) -> None:
    page = (ROOT / "docs" / "architecture.md").read_text()
    assert f"| `{package}/` |" in page, f"docs/architecture.md lists no line for {package}/"


def test_every_repository_path_the_docs_name_exists() -> None:
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in REPO_PATH.finditer(line):
                path = match.group(1).rstrip("/.").split("::")[0]
                if not (ROOT / path).exists():
                    missing.append(f"{doc.relative_to(ROOT)}:{number}: {path}")
    assert not missing, "docs name paths that do not exist:\n" + "\n".join(missing)
