"""`kubesessions crds --apply`: the CRDs and the Session template policy applied server-side,
then the CRDs waited for until the API server serves them (condition Established).

`kubectl wait --for=condition=Established` right after `kubectl apply` fails at once, instead
of waiting, when it reads a CRD whose status has no conditions yet (kubernetes/kubernetes#66439),
which is how every CRD starts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kubernetes_asyncio import config

from kubesessions.api.crds import api_path, documents
from kubesessions.api.names import JSON
from kubesessions.kube.kubeapi import Kube, api_client

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
FIELD_MANAGER = "kubesessions"
POLL = 0.1  # seconds between reads of a CRD not yet established (it takes a few ms to 1 s)


def established(crd: JSON) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


def not_established_reason(crd: JSON) -> str:
    """What the CRD's conditions say, for the error when it is never established."""
    conditions = (crd.get("status") or {}).get("conditions") or []
    said = [f"{c.get('type')}={c.get('status')} ({c.get('message', '')})" for c in conditions]
    return "; ".join(said) or "no conditions yet"


async def apply_crds(timeout: float, kubeconfig: Path | None = None) -> list[str]:
    """Apply both CRDs and the admission policy (this tool's field manager, taking over fields
    another manager set) and return the CRDs' names once both are established; TimeoutError
    names any that is not.
    The cluster is `kubeconfig`'s, else the one :func:`api_client` finds."""
    kube = api_client() if kubeconfig is None else config.new_client_from_config(config_file=str(kubeconfig))
    api = Kube(await kube)
    try:
        names = []
        for doc in documents():
            await api.apply(api_path(doc), doc, FIELD_MANAGER)
            if doc["kind"] == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
        deadline = time.monotonic() + timeout
        waiting = list(names)
        while True:
            read = [await api.get(f"{CRDS}/{name}") for name in waiting]
            waiting = [crd["metadata"]["name"] for crd in read if not established(crd)]
            if not waiting:
                return names
            if time.monotonic() >= deadline:
                stuck = ", ".join(f"{c['metadata']['name']}: {not_established_reason(c)}" for c in read)
                raise TimeoutError(f"CRDs not established after {timeout:g} s: {stuck}")
            await asyncio.sleep(POLL)
    finally:
        await api.close()
