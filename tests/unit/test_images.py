"""The image cache's keys and the size report (no build: the archives are placed by hand)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from kubesessions.localcluster import images

pytestmark = pytest.mark.unit


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout with one example folder, and a cache of its own (XDG_CACHE_HOME)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tmp_path / "repo" / "examples" / "chat"
    folder.mkdir(parents=True)
    shutil.copy(images.__file__, folder / "chat_app.py")  # any content
    (folder / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path / "repo"


def key_of(repo: Path, worker: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cache file ``example_archive`` looks for, seen through the build it starts."""
    looked_for: list[Path] = []

    def build(*args: object) -> Path:
        looked_for.append(Path(str(args[-1])))
        looked_for[-1].parent.mkdir(parents=True, exist_ok=True)
        return looked_for[-1]

    monkeypatch.setattr(images, "_build", build)
    monkeypatch.setattr(images, "_run", lambda argv, **kw: "sha256:worker\n")
    monkeypatch.setattr(images, "_tool", lambda name: name)
    images.example_archive(repo, "chat", Path(worker))
    return looked_for[-1].name


def test_an_examples_cache_key_is_its_folder_and_the_worker_image(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = key_of(repo, "kube-sessions-worker-aaaa.tar", monkeypatch)
    assert first.startswith("kube-sessions-example-chat-") and first.endswith(".tar")
    assert key_of(repo, "kube-sessions-worker-aaaa.tar", monkeypatch) == first
    assert key_of(repo, "kube-sessions-worker-bbbb.tar", monkeypatch) != first  # a new worker
    (repo / "examples" / "chat" / "chat_app.py").write_text("changed")
    assert key_of(repo, "kube-sessions-worker-aaaa.tar", monkeypatch) != first  # the app changed


def test_a_cached_example_is_not_built_again(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = key_of(repo, "kube-sessions-worker-aaaa.tar", monkeypatch)
    images.images_dir().mkdir(parents=True, exist_ok=True)
    (images.images_dir() / name).write_bytes(b"archive")
    monkeypatch.setattr(images, "_build", lambda *args: pytest.fail("built although cached"))
    got = images.example_archive(repo, "chat", Path("kube-sessions-worker-aaaa.tar"))
    assert got == images.images_dir() / name


def test_sizes_are_merged_into_the_report(tmp_path: Path) -> None:
    out = tmp_path / "images.json"
    one, two = tmp_path / "one.tar", tmp_path / "two.tar"
    one.write_bytes(b"x" * 10)
    two.write_bytes(b"y" * 20)
    images.record_sizes({"a:1": one}, out)
    images.record_sizes({"b:1": two}, out)
    report = json.loads(out.read_text())["images"]
    assert {ref: entry["bytes"] for ref, entry in report.items()} == {"a:1": 10, "b:1": 20}


def _fake_build(*args: object) -> Path:
    target = Path(str(args[-1]))
    target.write_bytes(b"new")
    return target


def test_a_new_build_keeps_the_two_newest_archives_of_its_image_and_no_older(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache would otherwise keep every image set ever built (19 GB of them filled this VM's
    disk until the kubelet node evicted the operator: CI, stop 32)."""
    cache = images.images_dir()
    cache.mkdir(parents=True)
    old = [cache / f"kube-sessions-example-chat-{n:016x}.tar" for n in range(3)]
    others = [cache / "kube-sessions-example-chat-model.tar", cache / f"kube-sessions-worker-{1:016x}.tar"]
    for age, path in enumerate([*old, *others]):
        path.write_bytes(b"archive")
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    monkeypatch.setattr(images, "_run", lambda argv, **kw: "sha256:worker\n")
    monkeypatch.setattr(images, "_tool", lambda name: name)
    monkeypatch.setattr(images, "_build", _fake_build)
    built = images.example_archive(repo, "chat", Path("kube-sessions-worker-aaaa.tar"))
    kept = sorted(p.name for p in cache.glob("*.tar"))
    assert kept == sorted(p.name for p in (built, old[2], *others)), kept


def test_a_cache_hit_counts_as_a_use(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = key_of(repo, "kube-sessions-worker-aaaa.tar", monkeypatch)
    archive = images.images_dir() / name
    archive.parent.mkdir(parents=True, exist_ok=True)
    archive.write_bytes(b"archive")
    os.utime(archive, (1_000_000, 1_000_000))
    monkeypatch.setattr(images, "_build", lambda *args: pytest.fail("built although cached"))
    assert images.example_archive(repo, "chat", Path("kube-sessions-worker-aaaa.tar")) == archive
    assert archive.stat().st_mtime > time.time() - 600, "a hit left the archive looking unused"
