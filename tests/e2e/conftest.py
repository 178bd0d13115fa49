"""End to end on the kubelet node: the chart installed with the images built here.

Run with `make e2e` (root, `make node-packages`): it builds the images, starts a kubelet-node
cluster in ``.localcluster-e2e``, labels the release namespace ``enforce=restricted``,
`helm install`s the chart with those images as the README says, and reaches the gateway in
its container through `kubectl port-forward`. At the end the cluster goes down and nothing
may be left behind. The default `pytest` run leaves these tests out (marker ``e2e``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from kubesessions.api.names import STATE_STORE_SECRET
from kubesessions.localcluster import binaries, cluster, containerd, images, kubeletnode, objectstore
from kubesessions.localcluster.nodeconfig import NodeConfig

from ..conftest import REPO, Cluster, await_condition

RELEASE = "ks"
NAMESPACE = "sessions"
STATE_DIR = Path(os.environ.get("KUBESESSIONS_E2E_STATE_DIR", ".localcluster-e2e"))
DISK_MARGIN = 3 * 10**9
DIAGNOSTICS_FILE = REPO / "build" / "e2e-diagnostics.txt"  # the Makefile prints it when a test failed
DIAGNOSTIC_LINES = 25
DIAGNOSTICS = (
    (
        "node conditions",
        [
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*].status.conditions[*]}{.type}={.status} {.message}{'\\n'}{end}",
        ],
    ),
    ("pods", ["get", "pods", "-A", "-o", "wide"]),
    (
        "Warning events, newest last",
        ["get", "events", "-A", "--field-selector=type=Warning", "--sort-by=.lastTimestamp"],
    ),
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Only a run that asks for ``-m e2e`` runs these (they need root and take minutes)."""
    if "e2e" in (config.option.markexpr or ""):
        return
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    if e2e:
        config.hook.pytest_deselected(items=e2e)
        items[:] = [item for item in items if not item.get_closest_marker("e2e")]


def stage(name: str, started: float) -> None:
    print(f"\n[e2e] {name}: {time.monotonic() - started:.1f}s", flush=True)


def record_images(archives: dict[str, Path]) -> None:
    """Their sizes, printed and kept in bench-results/images.json."""
    report = images.record_sizes(archives, REPO / "bench-results" / "images.json")
    for ref, entry in report.items():
        print(f"[e2e] image {ref}: {int(str(entry['bytes'])) / 1e6:.1f} MB")


def check_disk(archives: list[Path], where: Path) -> None:
    """Fail at once, saying so, where the node's images would not fit: containerd keeps each
    image twice (its layers and their unpacked snapshot), and a kubelet short of disk evicts
    the operator and the gateway mid-run, which reads as every later test failing."""
    need = 2 * sum(path.stat().st_size for path in archives) + DISK_MARGIN
    free = shutil.disk_usage(where).free
    if free < need:
        pytest.fail(
            f"make e2e needs {need / 1e9:.1f} GB free on {where} (the node's images twice, and "
            f"{DISK_MARGIN / 1e9:.0f} GB for the cluster), it has {free / 1e9:.1f} GB: free some, e.g. "
            f"old state directories (.localcluster-*) or {images.images_dir()}",
            pytrace=False,
        )


def write_diagnostics(kube: Cluster) -> None:
    """What a failed run's cluster looked like (the node, the pods, the Warning events), for
    the Makefile to print after pytest's summary, where a CI log's tail shows it."""
    parts = []
    for title, args in DIAGNOSTICS:
        proc = subprocess.run(
            [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        lines = (proc.stdout + proc.stderr).splitlines()[-DIAGNOSTIC_LINES:]
        parts.append(f"--- {title}\n" + "\n".join(line[:300] for line in lines))
    DIAGNOSTICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    DIAGNOSTICS_FILE.write_text(
        "===== e2e diagnostics (the cluster when the run ended)\n" + "\n".join(parts) + "\n"
    )


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The images built, a kubelet-node cluster up; at the end, down with nothing left."""
    started = time.monotonic()
    archives = images.build_all(REPO)
    record_images(archives)
    stage("images", started)
    DIAGNOSTICS_FILE.unlink(missing_ok=True)
    started = time.monotonic()
    state_dir = cluster.StateDir(STATE_DIR)
    if state_dir.load() is not None:
        cluster.down(state_dir)
    check_disk([*archives.values(), *images.build_examples(REPO).values()], STATE_DIR.absolute().parent)
    cluster.up(state_dir, NodeConfig(kind="kubelet", gpus=2))
    stage("kubelet-node cluster up", started)
    api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
    kube = Cluster(state_dir.kubeconfig, binaries.ensure_binaries(("kubectl",))["kubectl"], state_dir, api)
    try:
        yield kube
    finally:
        if request.session.testsfailed:
            write_diagnostics(kube)
        api.close()
        started = time.monotonic()
        cluster.down(state_dir)
        stage("cluster down", started)
        left = kubeletnode.leftovers(state_dir.root)
        state = state_dir.load()
        left += objectstore.leftovers(state_dir.root, state.ports if state else {})
        assert not left, f"the kubelet node left behind: {left}"


@dataclass
class Release:
    kube: Cluster
    namespace: str
    url: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [str(self.kube.kubectl), f"--kubeconfig={self.kube.kubeconfig}", "-n", self.namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout


def helm(kube: Cluster, *args: str) -> str:
    helm_bin = binaries.ensure_binaries(("helm",))["helm"]
    proc = subprocess.run(
        [str(helm_bin), f"--kubeconfig={kube.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args[:2])}: {proc.stderr.strip()}")
    return proc.stdout


def install_args(store_endpoint: str = "") -> list[str]:
    """`helm install` as the README tells users, with the images this run built; with the
    state store's endpoint, workers may reach it (the only egress besides DNS that the
    kubelet node's NetworkPolicy engine lets them have)."""
    egress = []
    if store_endpoint:
        address = urllib.parse.urlsplit(store_endpoint)
        egress = [
            {"to": [{"ipBlock": {"cidr": f"{address.hostname}/32"}}], "ports": [{"port": address.port}]}
        ]
    return [
        RELEASE,
        str(REPO / "charts" / "kube-sessions"),
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout=240s",
        f"--set=image.tag={images.TAG}",
        f"--set=workerImage.tag={images.TAG}",
        f"--set=watchNamespaces={{{NAMESPACE}}}",
        f"--set-json=networkPolicy.workerEgress={json.dumps(egress)}",
    ]


def store_endpoint(kube: Cluster) -> str:
    """The local cluster's state store, as pods reach it (from the Secret `up` writes)."""
    secret = kube.core.read_namespaced_secret(STATE_STORE_SECRET, objectstore.RELEASE_NAMESPACE)
    return base64.b64decode(secret.data["ENDPOINT"]).decode()


def example_apps() -> list[dict[str, Any]]:
    """The example Apps, asking for less CPU: the node has the machine's two cores. Not too
    little: the request is also the limit, and at 20m a worker's Python takes ~14 s to start."""
    apps = []
    for path in ("app-counter.yaml", "apps.yaml"):
        for body in yaml.safe_load_all((REPO / "examples" / path).read_text()):
            body["spec"].setdefault("resources", {})["cpu"] = "100m"
            apps.append(body)
    return apps


@pytest.fixture(scope="session")
def release(kube: Cluster) -> Iterator[Release]:
    started = time.monotonic()
    core = kube.core
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=NAMESPACE,
                labels={
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            )
        )
    )
    await_condition(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(NAMESPACE).items
        ),
        timeout=30,
        what="the default ServiceAccount",
    )
    # The state store's Secret, which `up` writes where the README installs the chart, beside
    # this release: its operator gets the store (suspend) as the chart's would.
    store = core.read_namespaced_secret(STATE_STORE_SECRET, objectstore.RELEASE_NAMESPACE)
    core.create_namespaced_secret(
        NAMESPACE, client.V1Secret(metadata=client.V1ObjectMeta(name=STATE_STORE_SECRET), data=store.data)
    )
    helm(kube, "install", *install_args(store_endpoint(kube)))
    stage("helm install (images in containers, Ready)", started)
    rel = Release(kube, NAMESPACE, "")
    rel.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": example_apps()})
    )
    forward = subprocess.Popen(
        [
            str(kube.kubectl),
            f"--kubeconfig={kube.kubeconfig}",
            "-n",
            NAMESPACE,
            "port-forward",
            f"svc/{RELEASE}-kube-sessions-gateway",
            ":80",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
        assert line.startswith("Forwarding from 127.0.0.1:"), line
        rel.url = f"http://{line.split()[2]}"
        yield rel
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def worker_pid(release: Release, pod_name: str) -> int:
    """The host's pid of the worker container's process in pod ``pod_name`` (containerd's task)."""
    pod = release.kube.core.read_namespaced_pod(pod_name, release.namespace)
    container_id = pod.status.container_statuses[0].container_id.split("://", 1)[1]
    assert release.kube.state_dir is not None
    tasks = containerd.ctr(kubeletnode.paths(release.kube.state_dir.root), "tasks", "list")
    return next(int(line.split()[1]) for line in tasks.splitlines() if line.startswith(container_id))
