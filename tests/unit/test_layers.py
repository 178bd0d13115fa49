"""The wings' layers (``[tool.importlinter]`` in pyproject.toml) hold, and the check can fail; the
names module is standard library only; the CLI module loads no heavy dependency before
``slimimports.install()`` has run (the rule kube/slimimports.py depends on)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kubesessions
from kubesessions.api import names

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if pythonpath is not None:
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_are_kept() -> None:
    done = _lint(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
    assert done.stdout.count(" KEPT") >= 7, done.stdout


@pytest.mark.parametrize(
    ("module", "forbidden", "contract"),
    [
        (
            "kubesessions/gateway/cache.py",
            "from kubesessions.control.decide import children",
            "Wings in layers",
        ),
        ("kubesessions/api/names.py", "import pydantic", "standard library only"),
        ("kubesessions/client/errors.py", "from kubesessions.kube import kubeapi", "The client imports"),
        ("kubesessions_worker/app.py", "import kubesessions.api.models", "The worker imports"),
        ("kubesessions/control/decide/idle.py", "import aiohttp", "deciders are pure"),
    ],
    ids=[
        "gateway-imports-operator",
        "names-imports-pydantic",
        "client-imports-kube",
        "worker-imports-models",
        "decider-does-io",
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, forbidden: str, contract: str
) -> None:
    """The same contracts over a copy of the sources with one forbidden import added."""
    shutil.copytree(Path(kubesessions.__file__).parent, tmp_path / "src" / "kubesessions")
    shutil.copytree(REPO / "worker-image" / "kubesessions_worker", tmp_path / "src" / "kubesessions_worker")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / module
    target.write_text(target.read_text() + f"\n{forbidden}\n")
    done = _lint(tmp_path, pythonpath=tmp_path / "src")
    assert done.returncode == 1, done.stdout + done.stderr
    broken = [line for line in done.stdout.splitlines() if "BROKEN" in line]
    assert len(broken) >= 1, done.stdout
    assert contract in done.stdout.split("Broken contracts")[1], done.stdout


def test_the_names_module_imports_the_standard_library_only() -> None:
    tree = ast.parse(Path(names.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported, "the names module imports something (typing at least)"
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_the_cli_loads_no_heavy_dependency_before_slimimports() -> None:
    """kube/slimimports.py must run before kopf or kubernetes_asyncio is imported: so the CLI
    module (and the console script's entry) import neither at module level."""
    code = (
        "import sys, kubesessions.cli.entry, kubesessions.cli.commands\n"
        "print(sorted(m for m in ('kopf', 'kubernetes_asyncio', 'kubernetes', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
