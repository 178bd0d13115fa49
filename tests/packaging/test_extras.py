"""The three installable parts: the base install is the client, ``[worker]`` the worker runtime;
neither brings kopf, a Kubernetes client or pydantic. Each is installed from the built wheel
into a fresh venv and used there."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
# What only the operator side may bring (distribution names, normalised).
OPERATOR_ONLY = {"kopf", "kubernetes", "kubernetes-asyncio", "pydantic", "cryptography", "pyyaml"}
# Imports that would mean the client or the worker reaches into the operator's dependencies.
OPERATOR_MODULES = ["kopf", "kubernetes", "kubernetes_asyncio", "pydantic", "yaml", "cryptography"]


def _run(*args: str | Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd="/", check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Built from a copy of what the Dockerfiles copy, so the build leaves nothing in the tree.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("operator", "worker-image"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, source)
    (built,) = out.glob("kube_sessions-*.whl")
    return built


def _install(wheel: Path, extra: str, where: Path) -> Path:
    """A fresh venv (no pip of its own: this interpreter's pip installs into it)."""
    venv.create(where, with_pip=False)
    python = where / "bin" / "python"
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", target)
    return python


def _distributions(python: Path) -> set[str]:
    script = (
        "import importlib.metadata as m, json, re; "
        "print(json.dumps(sorted({re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() "
        "for d in m.distributions()})))"
    )
    return set(json.loads(_run(python, "-c", script).stdout))


def _imports(python: Path, *modules: str) -> list[str]:
    """Import ``modules``; the operator-only modules that came along."""
    script = (
        f"import importlib, json, sys; [importlib.import_module(m) for m in {list(modules)!r}]; "
        f"print(json.dumps([m for m in {OPERATOR_MODULES!r} if m in sys.modules]))"
    )
    result: list[str] = json.loads(_run(python, "-c", script).stdout)
    return result


@pytest.fixture(scope="module")
def client_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(wheel, "", tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def worker_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _install(wheel, "worker", tmp_path_factory.mktemp("worker"))


def test_the_base_install_is_the_client_and_nothing_of_the_operator(client_only: Path) -> None:
    installed = _distributions(client_only)
    assert "aiohttp" in installed and "kube-sessions" in installed
    assert not installed & OPERATOR_ONLY, f"the client pulled in {sorted(installed & OPERATOR_ONLY)}"
    assert "nvidia-ml-py" not in installed
    assert _imports(client_only, "kubesessions.client", "kubesessions.client.aio") == []


def test_the_worker_extra_is_the_worker_runtime_and_nothing_of_the_operator(worker_only: Path) -> None:
    installed = _distributions(worker_only)
    assert {"aiohttp", "nvidia-ml-py"} <= installed
    assert not installed & OPERATOR_ONLY, f"the worker pulled in {sorted(installed & OPERATOR_ONLY)}"
    assert _imports(worker_only, "kubesessions_worker.lifecycle", "kubesessions_worker.cli") == []
    bin_dir = worker_only.parent
    assert "kubesessions-worker" in _run(bin_dir / "kubesessions-worker", "--help").stdout


def test_each_command_without_its_extra_says_which_to_install(client_only: Path, worker_only: Path) -> None:
    for python in (client_only, worker_only):
        done = _run(python.parent / "kubesessions", "--help", check=False)
        assert done.returncode == 2 and "pip install 'kube-sessions[operator]'" in done.stderr, done
        assert "Traceback" not in done.stderr
    done = _run(client_only.parent / "kubesessions-worker", "--help", check=False)
    assert done.returncode == 1 and "pip install 'kube-sessions[worker]'" in done.stderr, done
    assert "missing: nvidia-ml-py" in done.stderr and "Traceback" not in done.stderr


def test_the_fault_suite_is_in_no_installed_distribution(wheel: Path, worker_only: Path) -> None:
    """`make chaos`'s tooling lives in tests/faults/: the wheel (and so every image) holds none
    of it, and every wing the package declares is in it."""
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
    assert not [f for f in files if "chaos" in f or "faults" in f], files
    for wing in (
        "api",
        "common",
        "kube",
        "control/decide",
        "control/act",
        "gateway",
        "localcluster",
        "client",
        "cli",
    ):
        assert f"kubesessions/{wing}/__init__.py" in files, wing
    shown = _run(sys.executable, "-m", "pip", "--python", worker_only, "show", "-f", "kube-sessions").stdout
    assert "kubesessions/api/names.py" in shown
    assert "chaos" not in shown and "faults" not in shown
