"""Find or build the Kubernetes binaries the local cluster runs.

Order: ``KUBEBUILDER_ASSETS`` (the envtest convention), then ``PATH``, then the cache
(``~/.cache/kube-sessions/<version>/bin``), building pinned releases from Go modules
into it when missing. The releases carry ``replace`` directives, so ``go install
pkg@version`` refuses them; a small wrapper module that requires the release and
replaces each staging module by its published tag builds them instead. SeaweedFS (the state
store of suspended sessions) carries ``replace`` directives of its own: it is built inside a
copy of its module's source, where they apply.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.4"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.21.4"
# SeaweedFS publishes no semantic-version tags as a Go module: a pseudo-version pins a commit.
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
# The kubelet node's NetworkPolicy engine (its policy controller only). v2.1.0 is the one
# version the Go module proxy serves; its own advisories (GO-2026-4724 in its service proxy,
# GO-2026-5653 in its BGP router) are in controllers the node does not run.
KUBE_ROUTER_VERSION = "v2.1.0"
# Dependencies raised above kube-router v2.1.0's go.mod to the first release that fixes what
# govulncheck (x/vuln v1.10.0, the Go vulnerability database of 2026-11-05) finds reachable
# from its main package. README "Network isolation" lists what is left.
KUBE_ROUTER_FIXED_DEPENDENCIES = {
    "github.com/docker/docker": "v25.0.13+incompatible",  # GO-2024-2659, GO-2025-3829
    "github.com/osrg/gobgp/v3": "v3.35.0",  # GO-2025-3631, GO-2025-3632, GO-2025-3633
    "golang.org/x/net": "v0.60.0",  # GO-2024-2687, GO-2026-4918, -5026, -6603, -6610..6612, -6617
    "golang.org/x/text": "v0.39.0",  # GO-2026-5970
    "google.golang.org/grpc": "v1.83.2",  # GO-2026-4762, -6061, -6348, -6443
}

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
TOOLS = ("kubectl", "helm")
# The kubelet node's own: built only when `up --node kubelet` asks for them.
KUBELET_NODE = ("kubelet", "kube-proxy", "kube-router")
STATE_STORE = ("weed",)  # SeaweedFS: the S3 store of suspended sessions' state (both nodes)
KUBERNETES_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)


class BinaryError(RuntimeError):
    """A binary is missing and cannot be built here."""


@dataclass(frozen=True)
class GoBuild:
    """One ``go build`` of some main packages from a wrapper module."""

    name: str
    go_mod: str
    packages: dict[str, str]  # binary name -> package path
    ldflags: str = ""
    source: str = ""  # module@version built in a copy of its own source (go_mod unused)
    tags: str = "selinux,notest,grpcnotrace"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kube-sessions"


def cache_bin_dir() -> Path:
    return cache_root() / KUBERNETES_VERSION / "bin"


def staging_version(kubernetes_version: str) -> str:
    """Staging modules are tagged v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    return f"v0.{match.group(1)}.{match.group(2)}"


def staging_modules(release_go_mod: str) -> list[str]:
    """The k8s.io modules a release's go.mod requires at the placeholder v0.0.0."""
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+) v0\.0\.0$", release_go_mod, re.M)))


def kubernetes_wrapper_go_mod(version: str, release_go_mod: str, go_version: str) -> str:
    staged = staging_version(version)
    replaces = "\n".join(f"\t{m} => {m} {staged}" for m in staging_modules(release_go_mod))
    return (
        "module kubesessions.local/kubernetes-build\n\n"
        f"go {go_version}\n\n"
        f"require k8s.io/kubernetes {version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def kube_router_wrapper_go_mod(go_version: str) -> str:
    """kube-router's release with the fixed dependency versions: Go's minimal version
    selection takes the higher of these and the release's own requirements."""
    pins = {
        "github.com/cloudnativelabs/kube-router/v2": KUBE_ROUTER_VERSION,
        **KUBE_ROUTER_FIXED_DEPENDENCIES,
    }
    requires = "\n".join(f"\t{module} {version}" for module, version in pins.items())
    return f"module kubesessions.local/kube-router-build\n\ngo {go_version}\n\nrequire (\n{requires}\n)\n"


def version_ldflags(version: str) -> str:
    match = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if not match:
        raise ValueError(f"not a release version: {version!r}")
    major, minor = match.groups()
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(["-s -w", *flags])


def find_binary(name: str) -> Path | None:
    """Where ``name`` is, by the documented order, without building anything."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / name).is_file():
        return Path(assets) / name
    on_path = shutil.which(name)
    if on_path and _usable(name, Path(on_path)):
        return Path(on_path)
    cached = cache_bin_dir() / name
    return cached if cached.is_file() else None


def _usable(name: str, path: Path) -> bool:
    """A kubectl more than one minor release away from our server is not supported."""
    if name != "kubectl":
        return True
    try:
        out = subprocess.run(
            [str(path), "version", "--client", "-o", "json"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        minor = int(re.sub(r"\D", "", json.loads(out)["clientVersion"]["minor"]))
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return False
    wanted = int(KUBERNETES_VERSION.split(".")[1])
    return abs(minor - wanted) <= 1


def ensure_binaries(names: Iterable[str] = CONTROL_PLANE + TOOLS) -> dict[str, Path]:
    """Paths of all ``names``, building the missing ones into the cache."""
    found = {name: find_binary(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        build(missing)
        found.update({name: cache_bin_dir() / name for name in missing})
    return {name: path for name, path in found.items() if path is not None}


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryError(
            "the Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, "
            "kube-scheduler, kubectl, helm, weed) were not found and Go is not installed to build "
            "them. Either install Go >= 1.26 (they are then built once into "
            f"{cache_bin_dir()}), or set KUBEBUILDER_ASSETS to a directory holding them, "
            "or put them on PATH."
        )
    return go


def _go_version(go: str) -> str:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    match = re.match(r"go(\d+\.\d+)", out.stdout.strip())
    if not match:
        raise BinaryError(f"cannot read the Go version from {out.stdout!r}")
    return match.group(1) + ".0"


def _release_go_mod(go: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return Path(json.loads(out)["GoMod"]).read_text()


def plan(missing: Iterable[str], go: str, env: dict[str, str]) -> list[GoBuild]:
    """The builds that produce ``missing``."""
    wanted = set(missing)
    go_version = _go_version(go)
    builds: list[GoBuild] = []
    kube = [name for name in KUBERNETES_COMMANDS if name in wanted]
    if kube:
        builds.append(
            GoBuild(
                name=f"kubernetes {KUBERNETES_VERSION}",
                go_mod=kubernetes_wrapper_go_mod(KUBERNETES_VERSION, _release_go_mod(go, env), go_version),
                packages={n: f"k8s.io/kubernetes/cmd/{n}" for n in kube},
                ldflags=version_ldflags(KUBERNETES_VERSION),
            )
        )
    if "etcd" in wanted:
        builds.append(
            GoBuild(
                name=f"etcd {ETCD_VERSION}",
                go_mod=(
                    "module kubesessions.local/etcd-build\n\n"
                    f"go {go_version}\n\nrequire go.etcd.io/etcd/server/v3 {ETCD_VERSION}\n"
                ),
                packages={"etcd": "go.etcd.io/etcd/server/v3"},
                ldflags="-s -w",
            )
        )
    if "helm" in wanted:
        builds.append(
            GoBuild(
                name=f"helm {HELM_VERSION}",
                go_mod=(
                    "module kubesessions.local/helm-build\n\n"
                    f"go {go_version}\n\nrequire helm.sh/helm/v3 {HELM_VERSION}\n"
                ),
                packages={"helm": "helm.sh/helm/v3/cmd/helm"},
                ldflags=(f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
            )
        )
    if "weed" in wanted:
        builds.append(
            GoBuild(
                name=f"seaweedfs {SEAWEEDFS_VERSION}",
                go_mod="",
                packages={"weed": "./weed"},
                ldflags="-s -w",
                source=f"{SEAWEEDFS_MODULE}@{SEAWEEDFS_VERSION}",
                tags="",
            )
        )
    if "kube-router" in wanted:
        builds.append(
            GoBuild(
                name=f"kube-router {KUBE_ROUTER_VERSION}",
                go_mod=kube_router_wrapper_go_mod(go_version),
                packages={"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
                ldflags=(
                    "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version="
                    + KUBE_ROUTER_VERSION
                ),
            )
        )
    unknown = wanted - set(KUBERNETES_COMMANDS) - {"etcd", "helm", "weed", "kube-router"}
    if unknown:
        raise BinaryError(f"no build is known for {sorted(unknown)}")
    return builds


def build(missing: Iterable[str]) -> None:
    """Build ``missing`` binaries into the cache, printing progress to stderr."""
    go = _go()
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    bin_dir = cache_bin_dir()
    bin_dir.mkdir(parents=True, exist_ok=True)
    for job in plan(missing, go, env):
        work = cache_root() / "build" / job.name.split()[0]
        if job.source:
            _source_copy(go, env, job.source, work)
        else:
            work.mkdir(parents=True, exist_ok=True)
            (work / "go.mod").write_text(job.go_mod)
        _say(f"building {job.name}: {', '.join(job.packages)} (a cold build takes minutes)")
        started = time.monotonic()
        for binary, package in job.packages.items():
            # One package per go build keeps -o unambiguous; the build cache makes the
            # later ones cheap, since they share most of their dependencies.
            tmp = bin_dir / f".{binary}.partial"
            cmd = [
                go,
                "build",
                "-trimpath",
                f"-tags={job.tags}",
                "-ldflags",
                job.ldflags,
                "-o",
                str(tmp),
                package,
            ]
            proc = subprocess.run(cmd, cwd=work, env=env, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise BinaryError(f"building {binary} failed:\n{proc.stderr[-4000:]}")
            tmp.replace(bin_dir / binary)  # atomic: a half-built binary is never cached
            _say(f"  {binary} ready after {time.monotonic() - started:.0f}s")


def _source_copy(go: str, env: dict[str, str], module: str, work: Path) -> None:
    """A writable copy of ``module``'s source at ``work`` (the module cache's is read-only),
    made once per version: a marker file names the version it holds."""
    marker = work / ".kube-sessions-source"
    if marker.is_file() and marker.read_text() == module:
        return
    out = subprocess.run(
        [go, "mod", "download", "-json", module], capture_output=True, text=True, env=env, check=False
    )
    if out.returncode != 0:
        raise BinaryError(f"downloading {module} failed:\n{(out.stdout + out.stderr)[-4000:]}")
    source = Path(json.loads(out.stdout)["Dir"])
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work, copy_function=shutil.copyfile)  # copyfile: no read-only modes
    for folder, _, _ in os.walk(work):
        os.chmod(folder, 0o700)  # copytree copies the read-only modes of folders
    marker.write_text(module)


def _say(text: str) -> None:
    print(f"[kube-sessions binaries] {text}", file=sys.stderr, flush=True)


def main(names: Iterable[str] = CONTROL_PLANE + TOOLS) -> None:
    """Entry for ``python -m kubesessions.localcluster.binaries``: ensure ``names`` are present."""
    try:
        paths = ensure_binaries(names)
    except BinaryError as exc:
        _say(str(exc))
        raise SystemExit(2) from None
    for name, path in sorted(paths.items()):
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
