"""The local cluster's state store on the kubelet node: served at the pod bridge's gateway
address, reached from a worker's container through presigned URLs, handed to the chart's
operator through its Secret."""

from __future__ import annotations

import asyncio
import base64

import pytest

from kubesessions.api.names import STATE_STORE_SECRET, state_key
from kubesessions.localcluster import kubeletnode
from kubesessions.statestore import StoreConfig
from kubesessions.statestore.store import StateStore

from .conftest import RELEASE, Release
from .test_containers import new_session

pytestmark = pytest.mark.e2e


def test_a_worker_container_reaches_the_store_and_the_operator_has_it(release: Release) -> None:
    secret = release.kube.core.read_namespaced_secret(STATE_STORE_SECRET, release.namespace)
    env = {f"KUBESESSIONS_STATE_STORE_{k}": base64.b64decode(v).decode() for k, v in secret.data.items()}
    config = StoreConfig.from_env(env)
    assert config is not None
    assert config.endpoint.startswith(f"http://{kubeletnode.NETWORK.gateway}:")
    store = StateStore(config)
    name = new_session(release)
    key = state_key(release.namespace, name, "e2e")
    script = (
        "import sys, urllib.request as u\n"
        f"u.urlopen(u.Request({store.presign_put(key)!r}, data=b'from a container', method='PUT'))\n"
        f"sys.exit(0 if u.urlopen({store.presign_get(key)!r}).read() == b'from a container' else 5)\n"
    )
    release.kubectl("exec", name, "--", "python3", "-c", script)
    assert asyncio.run(store.keys(f"sessions/{release.namespace}/{name}/")) == [key]
    asyncio.run(store.delete(key))
    store.close()
    endpoint = release.kubectl(
        "exec",
        f"deploy/{RELEASE}-kube-sessions-operator",
        "--",
        "python3",
        "-c",
        "import os; print(os.environ['KUBESESSIONS_STATE_STORE_ENDPOINT'])",
    )
    assert endpoint.strip() == config.endpoint
