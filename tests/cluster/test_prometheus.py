"""A real Prometheus (Debian's package) scraping the operator, the gateway and a worker on the
local cluster: GPU-seconds in the Session's status and in Prometheus, and every dashboard
query and alert expression of the chart answered from what it scraped."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesessions.api import names
from kubesessions.client import Client
from kubesessions.control.decide import children

from ..conftest import Cluster, OperatorProcess, _free_port, await_condition, await_session, phase_is
from ..promtools import binary, check_metrics, dashboard_targets, grafana_query, rule_groups
from .conftest import GROUP, GatewayProcess, service_account_token
from .test_helm_install import CHART, helm, install, uninstall

pytestmark = pytest.mark.cluster

OPERATOR_JOB = "ks-kube-sessions-operator"  # the chart's default job for release "ks"
# Series only a worker that NVML answers has: none on a machine without a GPU (as here).
NVML_ONLY = ("kubesessions_worker_gpu_utilization_percent", "kubesessions_worker_gpu_memory_")
BUSY = 2.0  # seconds the GPU session's call runs
IDLE = 3.0  # seconds it then waits before it is closed


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; fails the test on any error Prometheus reports (a parse error, say)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            pytest.fail(f"Prometheus refused {expr!r}: {err.read().decode()}")
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as resp:
            return json.loads(resp.read())["data"]


def value(samples: list[dict[str, Any]]) -> float:
    assert len(samples) == 1, samples
    return float(samples[0]["value"][1])


@pytest.fixture
def token(kube: Cluster, namespace: str) -> str:
    return service_account_token(kube, namespace, "caller", allowed=True)


@pytest.fixture
def gpu_app(kube: Cluster, namespace: str, apps: None) -> str:
    """The example Slow app on one GPU (the process node advertises nvidia.com/gpu)."""
    body = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "App",
        "metadata": {"name": "gpu-slow"},
        "spec": {
            "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
            "entrypoint": "kubesessions_worker.examples.slow:Slow",
            "resources": {"gpu": 1, "cpu": "250m", "memory": "256Mi"},
        },
    }
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", body)
    return "gpu-slow"


@pytest.fixture
def pooled_app(kube: Cluster, namespace: str, apps: None) -> str:
    """The example Echo app on one GPU with a warm pool of one: the dashboard's pool panels get
    data, and a Session that claims the worker is billed from its claim."""
    body = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "App",
        "metadata": {"name": "gpu-pooled"},
        "spec": {
            "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
            "entrypoint": "kubesessions_worker.examples.echo:Echo",
            "resources": {"gpu": 1, "cpu": "250m", "memory": "256Mi"},
            "warmPool": {"size": 1},
        },
    }
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", body)
    return "gpu-pooled"


def start_prometheus(tmp_path: Path, jobs: list[dict[str, Any]]) -> Prometheus:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(**{"for": "1s"})))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": jobs,
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = tmp_path / "prometheus.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    await_condition(ready, timeout=60, what=f"Prometheus to be ready (log: {log})")
    return prom


@pytest.fixture
def stop_after(request: pytest.FixtureRequest) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def worker_address(kube: Cluster, namespace: str, session: str) -> tuple[str, str]:
    """The session's worker pod IP and its token (the worker asks for it on /metrics too)."""
    pod = kube.core.read_namespaced_pod(session, namespace)
    secret = kube.core.read_namespaced_secret(children.token_secret_name(session), namespace)
    return pod.status.pod_ip, base64.b64decode(secret.data[names.TOKEN_KEY]).decode()


def worker_get(pod_ip: str, token: str, path: str) -> str:
    request = urllib.request.Request(f"http://{pod_ip}:{names.WORKER_PORT}{path}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as resp:
        return str(resp.read().decode())


def selectors(expr: str) -> list[str]:
    """The series an expression reads, with their exact-match labels (regex matchers dropped:
    a 5xx need not have happened for the rule to be wired to the right series)."""
    found = []
    for name, labels in re.findall(r"\b(kubesessions_\w+|up)(\{[^}]*\})?", expr):
        exact = re.findall(r'\w+="[^"]*"', labels or "")
        found.append(name + ("{" + ",".join(exact) + "}" if exact else ""))
    return found


def test_prometheus_sees_gpu_seconds_every_panel_and_every_alert(
    kube: Cluster,
    namespace: str,
    gateway: GatewayProcess,
    operator: OperatorProcess,
    token: str,
    gpu_app: str,
    pooled_app: str,
    tmp_path: Path,
    stop_after: list[subprocess.Popen[bytes]],
) -> None:
    api = Client(gateway.url, token=token, namespace=namespace, request_timeout=60)
    # Each service's /metrics passes Prometheus' own lint before Prometheus scrapes it.
    for url in (operator.url, gateway.url):
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            check_metrics(resp.read().decode())
    workers = tmp_path / "workers.json"  # file-based discovery: the worker's address comes later
    workers.write_text("[]")
    prom = start_prometheus(
        tmp_path,
        [
            {"job_name": OPERATOR_JOB, "static_configs": [{"targets": [host(operator.url)]}]},
            {"job_name": "kube-sessions-gateway", "static_configs": [{"targets": [host(gateway.url)]}]},
            {
                "job_name": "kube-sessions-worker",
                "authorization": {"credentials_file": str(tmp_path / "worker-token")},
                "file_sd_configs": [{"files": [str(workers)], "refresh_interval": "1s"}],
            },
        ],
    )
    stop_after.append(prom.proc)

    # A few calls: an echo session closed, one left open, a refused call.
    echo = api.run({"app": "echo", "input": 1, "session": "new", "session_timeout": 600})["session_id"]
    api.run({"app": "echo", "input": 2, "session": echo})
    api.close_session(echo)
    api.run({"app": "echo", "input": 3, "session": "new", "session_timeout": 600})
    with pytest.raises(Exception, match="not found"):
        api.run({"app": "no-such-app", "input": 1})

    # The GPU session: busy BUSY seconds, then idle IDLE seconds (awaited on the worker's own
    # idle clock, the quantity measured), then closed.
    session = api.run({"app": gpu_app, "input": {"seconds": BUSY}, "session": "new", "session_timeout": 600})[
        "session_id"
    ]
    pod_ip, worker_token = worker_address(kube, namespace, session)

    def held() -> dict[str, float]:
        seconds: dict[str, float] = json.loads(worker_get(pod_ip, worker_token, "/status"))["heldSeconds"]
        return seconds

    after_call = held()  # its idle: from Ready until the call came
    (tmp_path / "worker-token").write_text(worker_token)
    workers.write_text(json.dumps([{"targets": [f"{pod_ip}:{names.WORKER_PORT}"]}]))
    check_metrics(worker_get(pod_ip, worker_token, "/metrics"))
    await_condition(
        lambda: prom.query(f'kubesessions_worker_held_seconds_total{{state="busy"}} >= {BUSY}'),
        timeout=30,
        what=f"Prometheus to scrape the worker, busy {BUSY}s",
    )
    # Awaited on the held idle time itself: the first reading came a moment after the call ended,
    # so the worker's idleSeconds reaching IDLE can leave the held idle short of it by that moment.
    await_condition(
        lambda: held()["idle"] - after_call["idle"] >= IDLE,
        timeout=IDLE + 10,
        what=f"the worker's held idle time to grow by {IDLE}s",
    )
    before_close = held()
    api.close_session(session)
    closed = await_session(kube, namespace, session, phase_is("Closed"), 30, "the GPU session to close")
    gpu = closed["status"]["gpuSeconds"]
    # One GPU: about BUSY busy; idle at least IDLE after the call, plus the moment between Ready
    # and the call (the readiness probe runs every second); the operator's final reading is the
    # worker's, up to the moments the close took.
    assert BUSY <= gpu["busy"] <= BUSY + 0.5, gpu
    assert before_close["idle"] - after_call["idle"] >= IDLE, (after_call, before_close)
    assert before_close["idle"] <= gpu["idle"] <= before_close["idle"] + 1.5, (gpu, before_close)
    assert gpu["starting"] > 0, gpu
    assert gpu["held"] == pytest.approx(gpu["starting"] + gpu["busy"] + gpu["idle"], abs=0.01)
    assert gpu["busyPercent"] == round(100 * gpu["busy"] / gpu["held"])
    wide = subprocess.run(
        [
            str(kube.kubectl),
            f"--kubeconfig={kube.kubeconfig}",
            "get",
            "sess",
            session,
            "-n",
            namespace,
            "-o",
            "wide",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split("\n")
    assert wide[0].split()[-3:] == ["GPU-SECONDS", "BUSY-%", "KEPT-UNTIL"], wide
    # KEPT-UNTIL is empty: the session was closed, not suspended.
    assert wide[1].split()[-2:] == [f"{gpu['held']:g}", str(gpu["busyPercent"])], wide

    # Prometheus: the operator's counters for the App agree with the status.
    labels = f'app="{gpu_app}",namespace="{namespace}"'
    await_condition(
        lambda: prom.query(
            f'kubesessions_gpu_seconds_total{{state="idle",{labels}}} >= {gpu["idle"] - 0.01}'
        ),
        timeout=15,
        what="Prometheus to scrape the final GPU-seconds",
    )
    for state in ("starting", "busy", "idle"):
        got = value(prom.query(f'kubesessions_gpu_seconds_total{{state="{state}",{labels}}}'))
        assert got == pytest.approx(gpu[state], abs=0.01), state
    assert value(prom.query('sum(kubesessions_sessions_ended_total{phase="Closed"})')) == 2
    assert prom.query('kubesessions_gpu_seconds_total{app="echo"}') == []  # no GPUs, no GPU-seconds

    # A Session of the pooled App takes its warm worker: billed from the claim (no starting
    # time: the worker's setup and wait were the App's pool time, counted apart).
    def pool_ready() -> bool:
        app = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
            *GROUP, namespace, "apps", pooled_app
        )
        return bool(((app.get("status") or {}).get("warmPool") or {}).get("ready"))

    await_condition(pool_ready, timeout=60, what="the pooled App's warm worker to be ready")
    pooled = api.run({"app": pooled_app, "input": 1, "session": "new", "session_timeout": 600})["session_id"]
    api.close_session(pooled)
    closed = await_session(kube, namespace, pooled, phase_is("Closed"), 30, "the pooled session to close")
    assert closed["status"]["startedFrom"] == "pool", closed["status"]
    assert closed["status"]["gpuSeconds"]["starting"] == 0.0, closed["status"]["gpuSeconds"]
    pool_labels = f'app="{pooled_app}",namespace="{namespace}"'
    await_condition(
        lambda: prom.query(f'kubesessions_pool_claims_total{{{pool_labels},result="hit"}} == 1'),
        timeout=15,
        what="Prometheus to scrape the claim",
    )
    assert value(prom.query(f"kubesessions_pool_gpu_seconds_total{{{pool_labels}}}")) > 0

    # Every dashboard query parses, and returns data (NVML panels only where a GPU answers).
    for target in dashboard_targets():
        expr = grafana_query(target["expr"])
        if any(series in expr for series in NVML_ONLY):
            prom.query(expr)  # parses; no data without a GPU
            continue
        await_condition(lambda e=expr: prom.query(e) or None, timeout=20, what=f"data for panel query {expr}")

    # Every alert: loaded, evaluated without error, and each series it reads exists.
    expected = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if all(r["health"] == "ok" and r["evaluationTime"] > 0 for r in rules) else None

    rules = await_condition(evaluated, timeout=15, what="every rule evaluated without error")
    assert {r["name"] for r in rules} == expected
    for rule in rules:
        prom.query(rule["query"])
        for series in selectors(rule["query"]):
            assert prom.query(series), f"alert {rule['name']}: no series {series}"
    firing = {r["name"] for r in rules if r["state"] != "inactive"}
    assert not firing & {"KubeSessionsOperatorDown", "KubeSessionsGateway5xx", "KubeSessionsStuckStarting"}


def host(url: str) -> str:
    return url.removeprefix("http://")


def service_monitors(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "ServiceMonitor"]


def service_monitor_targets(kube: Cluster, monitor: dict[str, Any]) -> list[dict[str, Any]]:
    """What the Prometheus Operator's discovery finds for a ServiceMonitor (its CRDs are not on
    this cluster, and Debian's Prometheus has no Kubernetes discovery): the Services in its
    namespaces that carry its selector's labels, and their endpoints on its endpoint's port, the
    job named after the Service; as file-based discovery groups. The endpoints are computed as
    the EndpointSlice controller does (the Ready Pods the Service selects, on its targetPort):
    the process node's Pods have loopback IPs, which an EndpointSlice may not hold."""
    spec = monitor["spec"]
    [endpoint] = spec["endpoints"]
    wanted = spec["selector"]["matchLabels"]
    groups = []
    for ns in spec["namespaceSelector"]["matchNames"]:
        for service in kube.core.list_namespaced_service(ns).items:
            labels = service.metadata.labels or {}
            if any(labels.get(k) != v for k, v in wanted.items()):
                continue
            [port] = [p for p in service.spec.ports if p.name == endpoint["port"]]
            selector = ",".join(f"{k}={v}" for k, v in service.spec.selector.items())
            targets = []
            for pod in kube.core.list_namespaced_pod(ns, label_selector=selector).items:
                ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
                if not ready or pod.metadata.deletion_timestamp:
                    continue
                numbers = {p.name: p.container_port for c in pod.spec.containers for p in c.ports or []}
                number = numbers.get(port.target_port, port.target_port)
                targets.append(f"{pod.status.pod_ip}:{number}")
            if targets:
                groups.append({"targets": targets, "labels": {"job": service.metadata.name}})
    return groups


def test_the_charts_service_monitors_find_the_operator_so_it_is_not_down(
    kube: Cluster, namespace: str, crds: None, tmp_path: Path, stop_after: list[subprocess.Popen[bytes]]
) -> None:
    """`metrics.serviceMonitor.enabled`: the operator's metrics Service and the gateway's, found
    as the rendered ServiceMonitors select them, answer Prometheus, and KubeSessionsOperatorDown
    (firing while nothing is scraped) goes quiet."""
    values = [
        "image.tag=0.1.0",
        f"watchNamespaces={{{namespace}}}",
        "crds.enabled=false",
        "gateway.replicas=1",
        "gateway.host=$(POD_IP)",  # the process node's pods share the machine's network
    ]
    sets = [a for v in values for a in ("--set", v)]
    rendered = helm(
        kube,
        "template",
        "ks",
        str(CHART),
        "-n",
        namespace,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        *sets,
    )
    monitors = service_monitors([d for d in yaml.safe_load_all(rendered) if d])
    assert len(monitors) == 2
    jobs = []
    for monitor in monitors:
        (tmp_path / f"{monitor['metadata']['name']}.json").write_text("[]")
        [endpoint] = monitor["spec"]["endpoints"]
        jobs.append(
            {
                "job_name": monitor["metadata"]["name"],
                "metrics_path": endpoint["path"],
                "scrape_interval": "1s",  # the test's pace; the chart's default is 30s
                "scrape_timeout": "1s",
                "file_sd_configs": [
                    {
                        "files": [str(tmp_path / f"{monitor['metadata']['name']}.json")],
                        "refresh_interval": "1s",
                    }
                ],
            }
        )
    prom = start_prometheus(tmp_path, jobs)
    stop_after.append(prom.proc)

    def alert_state() -> str:
        rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
        down = next(r for r in rules if r["name"] == "KubeSessionsOperatorDown")
        return str(down["state"]) if down["evaluationTime"] > 0 else ""

    await_condition(
        lambda: alert_state() == "firing", 30, "KubeSessionsOperatorDown to fire: nothing scraped yet"
    )
    # The release with the Service alone (no ServiceMonitor: its CRD is not installed here).
    install(kube, "ks", namespace, [*values, "metrics.service.enabled=true"])
    try:
        for monitor in monitors:
            groups = await_condition(
                lambda m=monitor: service_monitor_targets(kube, m),
                60,
                f"ready endpoints for ServiceMonitor {monitor['metadata']['name']}",
            )
            (tmp_path / f"{monitor['metadata']['name']}.json").write_text(json.dumps(groups))
        for job in ("ks-kube-sessions-operator", "ks-kube-sessions-gateway"):
            await_condition(
                lambda j=job: prom.query(f'up{{job="{j}"}} == 1'), 60, f"Prometheus to scrape job {job}"
            )
        await_condition(lambda: alert_state() == "inactive", 30, "KubeSessionsOperatorDown to go quiet")
        assert prom.query('kubesessions_operator_workqueue_depth{job="ks-kube-sessions-operator"}')
        assert prom.query('kubesessions_gateway_cached_apps{job="ks-kube-sessions-gateway"}')
    finally:
        uninstall(kube, "ks", namespace)
