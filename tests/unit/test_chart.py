"""The Helm chart: lint, render with default and other values, refuse typos (real helm)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesessions.localcluster import binaries

pytestmark = pytest.mark.unit
REPO = Path(__file__).parent.parent.parent
CHART = REPO / "charts" / "kube-sessions"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    exe = binaries.find_binary("helm")
    if exe is None:
        pytest.fail("helm not found: run `make binaries` (it builds helm into the cache)")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60)


def render(*sets: str) -> list[dict[str, Any]]:
    out = helm(
        "template", "ks", str(CHART), "--namespace", "ks-system", *(a for s in sets for a in ("--set", s))
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_lint_strict() -> None:
    out = helm("lint", "--strict", str(CHART), "--set", "image.tag=0.1.0")
    assert out.returncode == 0, out.stdout + out.stderr


def test_image_tag_is_required() -> None:
    out = helm("template", "ks", str(CHART))
    assert out.returncode != 0
    assert "/image/tag" in out.stderr


@pytest.mark.parametrize(
    "typo", ["gateway.replica=3", "gateway.process=2", "operatr.retention=5", "networkPolicy.enable=false"]
)
def test_schema_refuses_misspelled_keys(typo: str) -> None:
    out = helm("template", "ks", str(CHART), "--set", "image.tag=0.1.0", "--set", typo)
    assert out.returncode != 0
    assert "additional properties" in out.stderr


def test_without_leader_election_one_operator_at_a_time() -> None:
    docs = render("image.tag=0.1.0", "operator.leaderElection.enabled=false")
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    assert "--leader-elect" not in operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [d for d in docs if d["kind"] == "Role"]


def test_default_render_watches_all_namespaces_with_cluster_roles() -> None:
    docs = render("image.tag=0.1.0")
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == sorted(
        {
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
        }
    )
    # The one namespaced Role: the operator's Lease, in the release namespace.
    roles = [d for d in docs if d["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in roles] == ["ks-kube-sessions-operator-leader"]
    assert roles[0]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    # Two replicas, one leading through the Lease, with client-go's default durations.
    assert operator["spec"]["replicas"] == 2
    assert "strategy" not in operator["spec"]
    args = operator["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--leader-elect" in args
    assert [
        args[args.index(flag) + 1] for flag in ("--lease-duration", "--renew-deadline", "--retry-period")
    ] == [
        "15",
        "10",
        "2",
    ]
    assert "--namespace" not in args
    # No list of namespaces, and still isolation: the operator keeps the workers' policy.
    assert [args[args.index(flag) + 1] for flag in ("--peer-namespace", "--peer-instance")] == [
        "ks-system",
        "ks",
    ]
    assert args[args.index("--client-label") + 1] == "kubesessions.io/client=true"
    operator_role = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ks-kube-sessions-operator"
    )
    assert {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["create", "patch"],
    } in (operator_role["rules"])
    # The selectors the policy lets in are the labels the chart gives these pods.
    for component in ("operator", "gateway"):
        deployment = next(
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(component)
        )
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/instance"]) == (
            "kube-sessions",
            "ks",
        )
        assert labels["app.kubernetes.io/component"] == component
    disabled = render("image.tag=0.1.0", "networkPolicy.enabled=false")
    operator = next(
        d for d in disabled if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    assert "--no-network-policy" in operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_namespaced_render_uses_roles() -> None:
    docs = render(
        "image.tag=0.1.0",
        "watchNamespaces={team-a,team-b}",
        "gateway.replicas=3",
        "gateway.processes=2",
        "exampleApps[0].name=echo",
        "exampleApps[0].entrypoint=kubesessions_worker.examples.echo:Echo",
    )
    roles = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"]
    assert sorted(roles) == [
        ("ks-system", "ks-kube-sessions-operator-leader"),
        ("team-a", "ks-kube-sessions-gateway"),
        ("team-a", "ks-kube-sessions-operator"),
        ("team-b", "ks-kube-sessions-gateway"),
        ("team-b", "ks-kube-sessions-operator"),
    ]
    cluster_roles = [d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_roles == ["ks-kube-sessions-gateway-auth"]
    assert not [d for d in docs if d["kind"] == "NetworkPolicy"]  # the operator keeps them
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    )
    assert gateway["spec"]["replicas"] == 3
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:5] == ["gateway", "--namespace", "team-a", "--namespace", "team-b"]
    assert args[args.index("--processes") + 1] == "2"
    app = next(d for d in docs if d["kind"] == "App")
    assert app["spec"]["image"] == "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0"


def test_every_pod_is_restricted() -> None:
    for d in render("image.tag=0.1.0"):
        if d["kind"] != "Deployment":
            continue
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["resources"]["requests"] and c["readinessProbe"] and c["livenessProbe"]


def test_crds_match_the_committed_ones_and_are_kept() -> None:
    rendered = {
        d["metadata"]["name"]: d for d in render("image.tag=0.1.0") if d["kind"] == "CustomResourceDefinition"
    }
    for path in sorted((REPO / "crds").glob("*.yaml")):
        committed = yaml.safe_load(path.read_text())
        chart_copy = yaml.safe_load((CHART / "files" / "crds" / path.name).read_text())
        assert chart_copy == committed, (
            f"charts/kube-sessions/files/crds/{path.name} differs from crds/{path.name}"
        )
        got = rendered[committed["metadata"]["name"]]
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert got["spec"] == committed["spec"]
    off = [
        d for d in render("image.tag=0.1.0", "crds.enabled=false") if d["kind"] == "CustomResourceDefinition"
    ]
    assert off == []


def test_gateway_listens_on_every_address_so_port_forward_works() -> None:
    """`kubectl port-forward` (the README's way to reach the gateway) connects to localhost in
    the pod: a gateway bound to the pod IP alone refused it (seen on the kubelet node)."""
    docs = render("image.tag=0.1.0")
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    )
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    local = render("image.tag=0.1.0", "gateway.host=$(POD_IP)")
    gateway = next(
        d for d in local if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    )
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--host") + 1] == "$(POD_IP)"


def _gateway_args(*sets: str) -> list[str]:
    docs = render("image.tag=0.1.0", *sets)
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-gateway")
    )
    return list(gateway["spec"]["template"]["spec"]["containers"][0]["args"])


def test_gateway_cors_origins_are_off_by_default_and_passed_as_flags() -> None:
    assert "--cors-origin" not in _gateway_args()
    args = _gateway_args("gateway.corsOrigins={https://app.example,http://localhost:3000}")
    assert [args[i + 1] for i, a in enumerate(args) if a == "--cors-origin"] == [
        "https://app.example",
        "http://localhost:3000",
    ]
    refused = helm(
        "template", "ks", str(CHART), "--set", "image.tag=0.1.0", "--set", "gateway.corsOrigins={app.example}"
    )
    assert refused.returncode != 0 and "corsOrigins" in refused.stderr
