from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from kubesessions.localcluster import binaries

pytestmark = pytest.mark.unit

RELEASE_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/JeffAshton/win_pdh v0.0.0-20161109143554-76bb4ee9f0ab
\tk8s.io/api v0.0.0
\tk8s.io/kubectl v0.0.0
\tk8s.io/utils v0.0.0-20260210185600-b8788abfbbc2
)
"""


def test_staging_modules_are_the_k8s_modules_at_v0_0_0() -> None:
    assert binaries.staging_modules(RELEASE_GO_MOD) == ["k8s.io/api", "k8s.io/kubectl"]


def test_wrapper_go_mod_replaces_each_staging_module_with_its_tag() -> None:
    go_mod = binaries.kubernetes_wrapper_go_mod("v1.36.4", RELEASE_GO_MOD, "1.26.0")
    assert "require k8s.io/kubernetes v1.36.4" in go_mod
    assert "\tk8s.io/api => k8s.io/api v0.36.4" in go_mod
    assert "\tk8s.io/kubectl => k8s.io/kubectl v0.36.4" in go_mod
    assert "k8s.io/utils =>" not in go_mod


@pytest.mark.parametrize("bad", ["1.36.4", "v2.0", "v1.36"])
def test_staging_version_refuses_non_release_versions(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes release version"):
        binaries.staging_version(bad)


def test_version_ldflags_stamp_both_version_packages() -> None:
    flags = binaries.version_ldflags("v1.36.4")
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"-X {pkg}.gitVersion=v1.36.4" in flags
        assert f"-X {pkg}.gitMajor=1" in flags
        assert f"-X {pkg}.gitMinor=36" in flags


def _executable(path: Path, body: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assets, on_path = tmp_path / "assets", tmp_path / "path"
    assets.mkdir()
    on_path.mkdir()
    _executable(assets / "etcd")
    _executable(on_path / "etcd")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(assets))
    monkeypatch.setenv("PATH", str(on_path))
    assert binaries.find_binary("etcd") == assets / "etcd"
    monkeypatch.delenv("KUBEBUILDER_ASSETS")
    assert binaries.find_binary("etcd") == on_path / "etcd"


def test_cache_is_last_and_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert binaries.find_binary("kube-scheduler") is None
    cached = binaries.cache_bin_dir() / "kube-scheduler"
    assert (
        cached
        == tmp_path / "cache" / "kube-sessions" / binaries.KUBERNETES_VERSION / "bin" / "kube-scheduler"
    )
    cached.parent.mkdir(parents=True)
    _executable(cached)
    assert binaries.find_binary("kube-scheduler") == cached


@pytest.mark.parametrize(("minor", "usable"), [("36", True), ("35", True), ("37", True), ("32", False)])
def test_kubectl_on_path_must_be_within_one_minor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minor: str, usable: bool
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin{os.pathsep}/bin")
    version = f'{{"clientVersion": {{"major": "1", "minor": "{minor}"}}}}'
    _executable(tmp_path / "kubectl", f"#!/bin/sh\necho '{version}'\n")
    assert (binaries.find_binary("kubectl") == tmp_path / "kubectl") is usable


def test_without_go_or_binaries_the_error_says_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(binaries.BinaryError) as err:
        binaries.ensure_binaries(("etcd",))
    text = str(err.value)
    assert "KUBEBUILDER_ASSETS" in text
    assert "Go" in text
    assert "PATH" in text


def test_seaweedfs_is_built_in_its_own_source_at_the_pinned_commit() -> None:
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed here")
    (job,) = binaries.plan(["weed"], go, dict(os.environ))
    # Its go.mod has replace directives: `go install module@version` refuses it, a wrapper module
    # would drop them; a copy of its source keeps them.
    assert job.source == f"github.com/seaweedfs/seaweedfs@{binaries.SEAWEEDFS_VERSION}"
    assert job.packages == {"weed": "./weed"} and job.go_mod == ""


def test_a_source_copy_is_made_once_per_version(tmp_path: Path) -> None:
    work = tmp_path / "seaweedfs"
    work.mkdir()
    (work / ".kube-sessions-source").write_text("example.com/m@v1")
    (work / "kept").write_text("x")
    # Marked as that version already: no download (the go command named does not exist).
    binaries._source_copy("/nonexistent/go", {}, "example.com/m@v1", work)
    assert (work / "kept").exists()
    with pytest.raises((binaries.BinaryError, OSError)):
        binaries._source_copy("/nonexistent/go", {}, "example.com/m@v2", work)


def test_kube_router_is_built_with_its_fixed_dependencies() -> None:
    go_mod = binaries.kube_router_wrapper_go_mod("1.26.0")
    assert f"\tgithub.com/cloudnativelabs/kube-router/v2 {binaries.KUBE_ROUTER_VERSION}\n" in go_mod
    # Raised past what v2.1.0's go.mod asks (grpc v1.62.0, x/net v0.21.0, docker v25.0.3).
    assert "\tgoogle.golang.org/grpc v1.83.2\n" in go_mod
    assert "\tgolang.org/x/net v0.60.0\n" in go_mod
    assert "\tgithub.com/docker/docker v25.0.13+incompatible\n" in go_mod
    assert "replace" not in go_mod  # requires only: the release's own higher versions still win
    assert "kube-router" in binaries.KUBELET_NODE
    assert "kube-router" not in binaries.KUBERNETES_COMMANDS
