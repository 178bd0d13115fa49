"""Shared by the benchmarks that need a cluster: CRDs installed, a namespace ready for pods,
and the operator running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, utils

REPO = Path(__file__).parent.parent


def prepare(api: client.ApiClient, namespace: str, timeout: float = 60) -> None:
    """Install the committed CRDs and create ``namespace``; return once pods can be admitted
    there (its default ServiceAccount exists)."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        utils.create_from_yaml(api, str(path))
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    deadline = time.monotonic() + timeout
    while not core.list_namespaced_service_account(namespace).items:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {namespace} after {timeout:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def operator(
    kubeconfig: Path, namespace: str, metrics_port: int, log: Path, *args: str, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """`kubesessions operator` for ``namespace`` (stderr to ``log``), from when its /metrics
    answers until the block ends."""
    with log.open("wb") as err:
        op = subprocess.Popen(
            [str(Path(sys.executable).parent / "kubesessions"), "operator", "--namespace", namespace,
             "--metrics-port", str(metrics_port), *args],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5):
                    break
            except OSError:
                if op.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the operator did not serve /metrics within {timeout:.0f}s; see {log}"
                    ) from None
                time.sleep(0.1)
        yield op
    finally:
        op.terminate()
        op.wait(timeout=30)
