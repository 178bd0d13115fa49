"""Workers as real containers under an enforced `restricted` namespace, on the kubelet node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ..conftest import REPO, await_pod_deleted, await_session, phase_is
from .conftest import Release, worker_pid

pytestmark = pytest.mark.e2e


def new_session(release: Release, timeout: int = 300) -> str:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {"app": "counter", "sessionTimeout": timeout},
    }
    release.kubectl("apply", "-f", "-", stdin=json.dumps(body))
    await_session(release.kube, release.namespace, name, phase_is("Ready"), timeout=120, what="Ready")
    return name


def test_namespace_enforces_restricted(release: Release) -> None:
    labels = release.kube.core.read_namespace(release.namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_smoke_script_through_the_gateway_container(release: Release) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "smoke_test.py"),
            f"--gateway={release.url}",
            f"--namespace={release.namespace}",
            f"--kubeconfig={release.kube.kubeconfig}",
            f"--kubectl={release.kube.kubectl}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "smoke: OK" in proc.stdout


def test_worker_container_logs_json_is_read_only_and_not_root(release: Release) -> None:
    name = new_session(release)
    logs = release.kubectl("logs", name).splitlines()
    records = [json.loads(line) for line in logs if line.startswith("{")]
    assert records, f"no JSON log lines from the worker: {logs[:5]}"
    assert all(isinstance(r, dict) for r in records)
    assert release.kubectl("exec", name, "--", "id", "-u").strip() == "10001"
    write = subprocess.run(
        [
            str(release.kube.kubectl),
            f"--kubeconfig={release.kube.kubeconfig}",
            "-n",
            release.namespace,
            "exec",
            name,
            "--",
            "sh",
            "-c",
            "echo x > /probe",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr


def test_close_stops_the_container_within_the_grace_period(release: Release) -> None:
    name = new_session(release)
    pod = release.kube.core.read_namespaced_pod(name, release.namespace)
    grace = pod.spec.termination_grace_period_seconds
    started = time.monotonic()
    release.kubectl("annotate", f"session/{name}", "kubesessions.io/close=e2e")
    await_pod_deleted(release.kube, release.namespace, name, timeout=grace + 10)
    took = time.monotonic() - started
    assert took < grace, f"the worker's pod took {took:.1f}s to go (grace {grace}s)"
    print(f"[e2e] close -> container gone: {took:.1f}s (grace {grace}s)")


def test_kill_9_of_the_worker_process_fails_the_session_as_worker_lost(release: Release) -> None:
    name = new_session(release)
    pid = worker_pid(release, name)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    obj = await_session(
        release.kube,
        release.namespace,
        name,
        lambda s: (s.get("status") or {}).get("phase") == "Failed",
        timeout=30,
        what="Failed",
    )
    took = time.monotonic() - started
    reasons = [c.get("reason") for c in obj["status"].get("conditions", [])] + [obj["status"].get("reason")]
    assert "WorkerLost" in reasons, obj["status"]
    assert took < 5, f"kill -9 -> Failed/WorkerLost took {took:.1f}s"
    print(f"[e2e] kill -9 -> Failed/WorkerLost: {took:.1f}s")
