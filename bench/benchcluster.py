"""Shared by the benchmarks that need a cluster: CRDs installed and a namespace ready for pods."""

from __future__ import annotations

import time
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
