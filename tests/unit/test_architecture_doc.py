"""docs/architecture.md names the module that owns each step: every name must still exist, and
the README must link the document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
SOURCE_ROOTS = (REPO / "operator" / "kubesessions", REPO / "worker-image")


def named_modules(text: str) -> set[str]:
    """Module paths the document names: `x/y.py` in backticks or in the picture."""
    return set(re.findall(r"[\w/]*\w+\.py\b", text))


def _exists(name: str) -> bool:
    """A path from a source root (or the repository's); a bare file name (in the picture, under
    its package's name) anywhere in the sources."""
    if any((root / name).is_file() for root in (*SOURCE_ROOTS, REPO)):
        return True
    return "/" not in name and any(next(root.rglob(name), None) for root in SOURCE_ROOTS)


def test_every_module_the_architecture_names_exists() -> None:
    names = named_modules(DOC.read_text())
    assert {"gateway/auth.py", "localcluster/node.py", "kubesessions_worker/runner.py"} <= names
    missing = [name for name in sorted(names) if not _exists(name)]
    assert missing == [], f"docs/architecture.md names modules that do not exist: {missing}"


def test_the_readme_links_the_architecture() -> None:
    assert "(docs/architecture.md)" in (REPO / "README.md").read_text()
