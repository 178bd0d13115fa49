"""The kubelet node's images, made on this machine from Debian packages: nothing is pulled.

- a base image: a minimal Debian bookworm root file system with Python 3.11 and pip, made
  by ``mmdebstrap`` (the stand-in for ``python:3.11-slim``, passed as ``BASE_IMAGE``);
- the project's two images, built by ``buildah`` from the repository's own Dockerfiles on
  that base;
- a pause image (the pod sandbox): a static Go program in a one-layer docker-archive;
- the example apps' images (``examples/<name>/Dockerfile``), each built ``FROM`` the worker
  image built here: what a user's own derived image is.

Each is saved as a docker-archive under ``~/.cache/kube-sessions/images``, keyed by a hash
of what it is built from, so a second run only imports them into containerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubesessions.localcluster.binaries import BinaryError, cache_root
from kubesessions.localcluster.nodeconfig import EXAMPLE_IMAGES, OPERATOR_IMAGE, WORKER_IMAGE

BASE_IMAGE = "localhost/kube-sessions-base:bookworm"
PAUSE_IMAGE = "localhost/kube-sessions-pause:1"
TAG = "0.1.0"
KEEP_BUILDS = 2  # archives kept per image: this checkout's and one other's
# What the base needs beyond minbase: Python and pip for the Dockerfiles' `pip install`,
# passwd for their `useradd`, CA certificates for pip's downloads at build time.
BASE_PACKAGES = ("python3", "python3-pip", "passwd", "ca-certificates")
MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    f"--include={','.join(BASE_PACKAGES)}",
    # Merged /usr made directly: the usrmerge package would bring Perl (36 MB) along.
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # An image's Python is its own: pip may install into it (the PEP 668 marker goes).
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
)
# Where the repository's sources are read from for a build (also what its cache key hashes).
SOURCES = ("pyproject.toml", "README.md", "operator", "worker-image", "Dockerfile")

# The pod sandbox's process: waits for SIGTERM/SIGINT, reaping any child that exits.
PAUSE_GO = """package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 4)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\treturn
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tif pid, _ := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


class ImageError(RuntimeError):
    """An image cannot be built here."""


@dataclass(frozen=True)
class ProjectImage:
    """One of the repository's images: its name and the Dockerfile it is built from."""

    repository: str
    dockerfile: str

    @property
    def ref(self) -> str:
        return f"{self.repository}:{TAG}"


PROJECT_IMAGES = (
    ProjectImage(OPERATOR_IMAGE, "Dockerfile"),
    ProjectImage(WORKER_IMAGE, "worker-image/Dockerfile"),
)


def images_dir() -> Path:
    return cache_root() / "images"


def sources_digest(repo: Path, paths: Iterable[str] = SOURCES) -> str:
    """A hash of every file a build reads (bytecode caches left out)."""
    digest = hashlib.sha256()
    for top in paths:
        root = repo / top
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc" or ".egg-info" in str(path):
                continue
            digest.update(str(path.relative_to(repo)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def docker_archive(ref: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str]) -> bytes:
    """A one-layer docker-archive (what `docker save` writes) holding ``files``
    (path -> (content, mode)), tagged ``ref``: enough for containerd to import and run."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        for name, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            layer.addfile(info, io.BytesIO(content))
    layer_bytes = layer_buf.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{diff_id}/layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in (
            (f"{diff_id}/layer.tar", layer_bytes),
            (config_name, config),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def pause_archive() -> Path:
    """The pause image as a docker-archive, built once with the machine's Go."""
    target = images_dir() / f"pause-{hashlib.sha256(PAUSE_GO.encode()).hexdigest()[:12]}.tar"
    if target.is_file():
        return target
    go = shutil.which("go")
    if go is None:
        raise BinaryError("Go is needed to build the pause image for the kubelet node")
    work = images_dir() / "pause-build"
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text("module kubesessions.local/pause\n\ngo 1.21\n")
    (work / "main.go").write_text(PAUSE_GO)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    _run([go, "build", "-trimpath", "-ldflags=-s -w", "-o", "pause", "."], cwd=work, env=env)
    archive = docker_archive(PAUSE_IMAGE, {"pause": ((work / "pause").read_bytes(), 0o755)}, ["/pause"])
    _atomic_write(target, archive)
    return target


def ensure_base() -> None:
    """The Debian base image in buildah's store, from a cached mmdebstrap tarball."""
    if _buildah_has(BASE_IMAGE):
        return
    key = hashlib.sha256(" ".join(MMDEBSTRAP_OPTIONS).encode()).hexdigest()[:12]
    rootfs = images_dir() / f"base-bookworm-{key}.tar"
    if not rootfs.is_file():
        _say("building the Debian bookworm base with mmdebstrap (about a minute)")
        images_dir().mkdir(parents=True, exist_ok=True)
        partial = rootfs.with_suffix(".partial.tar")
        _run(
            [
                _tool("mmdebstrap"),
                *MMDEBSTRAP_OPTIONS,
                "bookworm",
                str(partial),
                *_apt_sources(),
            ]
        )
        partial.replace(rootfs)
    buildah = _tool("buildah")
    container = _run([buildah, "from", "scratch"]).strip()
    try:
        _run([buildah, "add", container, str(rootfs), "/"])
        _run(
            [
                buildah,
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                container,
            ]
        )
        _run([buildah, "commit", "--quiet", container, BASE_IMAGE])
    finally:
        subprocess.run([buildah, "rm", container], capture_output=True, check=False)


def project_archive(repo: Path, image: ProjectImage) -> Path:
    """``image`` built from its Dockerfile on the Debian base, as a cached docker-archive."""
    name = image.repository.rsplit("/", 1)[-1]
    target = images_dir() / f"{name}-{sources_digest(repo)}.tar"
    if _cached(target):
        return target
    ensure_base()
    return _prune_older(
        _build(repo, image.ref, repo / image.dockerfile, repo, {"BASE_IMAGE": BASE_IMAGE}, target)
    )


def example_archive(repo: Path, name: str, worker_archive: Path) -> Path:
    """The example app ``examples/<name>`` built from its Dockerfile ``FROM`` the worker image in
    ``worker_archive``, as a cached docker-archive (key: the folder and that worker image)."""
    folder = repo / "examples" / name
    key = hashlib.sha256(f"{sources_digest(folder, ('.',))} {worker_archive.name}".encode()).hexdigest()
    ref = f"{EXAMPLE_IMAGES[name]}:{TAG}"
    target = images_dir() / f"{ref.split('/')[-1].split(':')[0]}-{key[:16]}.tar"
    if _cached(target):
        return target
    # FROM the image by its ID, loaded from this checkout's archive: the tag in buildah's store
    # may be another checkout's worker build.
    worker = _run([_tool("buildah"), "pull", "--quiet", f"docker-archive:{worker_archive}"]).split()[-1]
    return _prune_older(_build(repo, ref, folder / "Dockerfile", folder, {"WORKER_IMAGE": worker}, target))


def _build(
    repo: Path, ref: str, dockerfile: Path, context: Path, build_args: dict[str, str], target: Path
) -> Path:
    """``buildah bud`` of ``dockerfile`` in ``context``, saved as the docker-archive ``target``."""
    buildah = _tool("buildah")
    _say(f"building {ref} from {dockerfile.relative_to(repo)}")
    started = time.monotonic()
    _run(
        [
            buildah,
            "bud",
            "--quiet",
            "--layers",
            "--isolation=chroot",
            "--pull=never",
            *(f"--build-arg={key}={value}" for key, value in build_args.items()),
            # pip (and apt, over https) fetch the build's dependencies with the machine's own
            # certificates: a TLS-intercepting proxy's CA is among them, not in the image's.
            "--volume=/etc/ssl/certs:/etc/ssl/certs:ro",
            "-f",
            str(dockerfile),
            "-t",
            ref,
            str(context),
        ],
        cwd=repo,
    )
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    _run([buildah, "push", "--quiet", ref, f"docker-archive:{partial}:{ref}"])
    partial.replace(target)
    _say(f"  {ref} built in {time.monotonic() - started:.0f}s")
    return target


def _cached(target: Path) -> bool:
    """Whether ``target`` is in the cache; a hit is a use (its time is what pruning keeps by)."""
    if not target.is_file():
        return False
    target.touch()
    return True


def _prune_older(target: Path) -> Path:
    """Of the cached archives of ``target``'s image (just built), keep the ``KEEP_BUILDS`` used
    last: every source change makes a new image set (about 2.9 GB with the examples), and
    checkouts side by side may each be using one."""
    image = target.name[: -len("-0123456789abcdef.tar")]
    same = re.compile(rf"{re.escape(image)}-[0-9a-f]{{16}}\.tar")
    builds = sorted(
        (p for p in target.parent.iterdir() if same.fullmatch(p.name)),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in builds[KEEP_BUILDS:]:
        stale.unlink(missing_ok=True)
    return target


def build_all(repo: Path) -> dict[str, Path]:
    """Every image the kubelet node runs, as docker-archives: image reference -> archive."""
    archives = {PAUSE_IMAGE: pause_archive()}
    for image in PROJECT_IMAGES:
        archives[image.ref] = project_archive(repo, image)
    return archives


def build_examples(repo: Path, names: Iterable[str] = tuple(EXAMPLE_IMAGES)) -> dict[str, Path]:
    """The example apps' images (one build at a time), FROM this checkout's worker image."""
    worker = project_archive(repo, next(i for i in PROJECT_IMAGES if i.repository == WORKER_IMAGE))
    return {f"{EXAMPLE_IMAGES[name]}:{TAG}": example_archive(repo, name, worker) for name in names}


def size_report(archives: dict[str, Path]) -> dict[str, dict[str, object]]:
    """Each image's size: the bytes of its layers, uncompressed (its docker-archive's size)."""
    return {ref: {"bytes": path.stat().st_size, "archive": str(path)} for ref, path in archives.items()}


def record_sizes(archives: dict[str, Path], out: Path) -> dict[str, dict[str, object]]:
    """:func:`size_report` of ``archives`` merged into the JSON file ``out``: the sizes of images
    built by another step (the examples, the project's) stay."""
    report = size_report(archives)
    try:
        known = json.loads(out.read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError):
        known = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": {**known, **report}}, indent=2))
    return report


def main() -> None:
    """`python -m kubesessions.localcluster.images`: build them, print and save their sizes."""
    started = time.monotonic()
    try:
        archives = build_all(Path.cwd())
        archives.update(build_examples(Path.cwd()))
    except (ImageError, BinaryError) as exc:
        _say(str(exc))
        raise SystemExit(2) from None
    out = Path("bench-results") / "images.json"
    report = record_sizes(archives, out)
    for ref, entry in report.items():
        print(f"{ref:55} {int(str(entry['bytes'])) / 1e6:8.1f} MB")
    print(f"(sizes written to {out}; {time.monotonic() - started:.0f}s)")


def _buildah_has(ref: str) -> bool:
    proc = subprocess.run([_tool("buildah"), "inspect", "--type", "image", ref], capture_output=True)
    return proc.returncode == 0


def _apt_sources() -> list[str]:
    """The machine's own apt sources, so the base comes from the mirror it is set up for."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    one_line = Path("/etc/apt/sources.list")
    for path in (deb822, one_line):
        if path.is_file() and path.stat().st_size > 0:
            return [str(path)]
    return []


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ImageError(f"{name} is not installed: run `make node-packages` (as root)")
    return path


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)


def _say(text: str) -> None:
    print(f"[kube-sessions images] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
