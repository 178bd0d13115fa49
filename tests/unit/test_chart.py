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
            "Secret",  # the session-token key
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
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
    # Issue 25, defect 9: the gateway reads no Secret (it derives session tokens from the key
    # the chart hands both through the kubelet); the operator's writes are narrowed to its own
    # labelled objects by a ValidatingAdmissionPolicy.
    gateway_role = next(
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "ks-kube-sessions-gateway"
    )
    assert not [r for r in gateway_role["rules"] if "secrets" in r["resources"]]
    key = next(d for d in docs if d["kind"] == "Secret")["metadata"]["name"]
    for component in ("operator", "gateway"):
        deployment = next(
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith(component)
        )
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {
            "name": "KUBESESSIONS_TOKEN_KEY",
            "valueFrom": {"secretKeyRef": {"name": key, "key": "key"}},
        } in env
    owns = next(
        d for d in docs if d["kind"] == "ValidatingAdmissionPolicy" and "operator" in d["metadata"]["name"]
    )
    assert owns["spec"]["matchConditions"][0]["expression"] == (
        "request.userInfo.username == 'system:serviceaccount:ks-system:ks-kube-sessions-operator'"
    )
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
    """crds/ (the CRDs and the Session template policy) is in the chart, kept on uninstall."""
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in render("image.tag=0.1.0")}
    committed_files = sorted((REPO / "crds").glob("*.yaml"))
    assert {p.name for p in committed_files} == {p.name for p in (CHART / "files" / "crds").glob("*.yaml")}
    for path in committed_files:
        committed = yaml.safe_load(path.read_text())
        chart_copy = yaml.safe_load((CHART / "files" / "crds" / path.name).read_text())
        assert chart_copy == committed, (
            f"charts/kube-sessions/files/crds/{path.name} differs from crds/{path.name}"
        )
        got = rendered[committed["kind"], committed["metadata"]["name"]]
        assert got["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert got["spec"] == committed["spec"]
    off = {(d["kind"], d["metadata"]["name"]) for d in render("image.tag=0.1.0", "crds.enabled=false")}
    assert not off & {
        (d["kind"], d["metadata"]["name"]) for d in map(yaml.safe_load, map(Path.read_text, committed_files))
    }


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


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_service_monitors_scrape_the_operator_and_gateway_under_the_rules_job_names() -> None:
    """What the Prometheus Operator would do with the rendered ServiceMonitors (its CRDs are not
    here): each selects exactly one of the release's Services, in the release's namespace, on a
    port that Service has, whose Pods listen on it; the job is the Service's name, and the
    operator's is the job KubeSessionsOperatorDown watches."""
    assert not [d for d in render("image.tag=0.1.0") if d["kind"] == "ServiceMonitor"]
    docs = render(
        "image.tag=0.1.0", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"
    )
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    jobs = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": ["ks-system"]}
        [selected] = [
            s
            for s in services.values()
            if _labels_match(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert selected["metadata"]["namespace"] == "ks-system"
        [endpoint] = spec["endpoints"]
        assert set(endpoint) == {"port", "path", "interval", "scrapeTimeout"}
        assert endpoint["path"] == "/metrics" and endpoint["interval"] == "30s"
        [port] = [p for p in selected["spec"]["ports"] if p["name"] == endpoint["port"]]
        [deployment] = [
            d
            for d in deployments.values()
            if _labels_match(selected["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert port["targetPort"] in {p["name"] for p in container["ports"]}
        jobs.add(selected["metadata"]["name"])
    assert jobs == {"ks-kube-sessions-operator", "ks-kube-sessions-gateway"}
    [rule] = [d for d in docs if d["kind"] == "PrometheusRule"]
    down = next(
        r for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "KubeSessionsOperatorDown"
    )
    assert down["expr"] == 'absent(up{job="ks-kube-sessions-operator"} == 1)'
    operator = services["ks-kube-sessions-operator"]
    assert operator["spec"]["clusterIP"] == "None"  # every replica a target, not one behind a VIP
    assert [p["port"] for p in operator["spec"]["ports"]] == [8081]


def test_the_operator_metrics_service_alone_and_its_labels() -> None:
    names = {d["metadata"]["name"] for d in render("image.tag=0.1.0") if d["kind"] == "Service"}
    assert names == {"ks-kube-sessions-gateway"}
    docs = render(
        "image.tag=0.1.0", "metrics.service.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    assert "ks-kube-sessions-operator" in {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    docs = render(
        "image.tag=0.1.0", "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    assert all(d["metadata"]["labels"]["release"] == "prom" for d in docs if d["kind"] == "ServiceMonitor")


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


def _operator_env(*sets: str) -> dict[str, Any]:
    docs = render("image.tag=0.1.0", *sets)
    (deploy,) = [d for d in docs if d["kind"] == "Deployment" and "operator" in d["metadata"]["name"]]
    return {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_operator_reads_the_state_store_from_an_optional_secret() -> None:
    env = _operator_env()
    for key in ("ENDPOINT", "BUCKET", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"):
        ref = env[f"KUBESESSIONS_STATE_STORE_{key}"]["valueFrom"]["secretKeyRef"]
        # optional: no Secret means no store (suspend unavailable), not a pod that cannot start
        assert ref == {"name": "kube-sessions-state-store", "key": key, "optional": True}
    named = _operator_env("stateStore.existingSecret=my-s3")
    assert named["KUBESESSIONS_STATE_STORE_BUCKET"]["valueFrom"]["secretKeyRef"]["name"] == "my-s3"
    assert not [name for name in _operator_env("stateStore.existingSecret=") if "STATE_STORE" in name]
