"""A claim patch that fails as a cut connection, before or after it reached the API server, is
read back: a landed claim is the Session's (not a second worker, not a cold start), one that
never left is tried again. Real API server; only the connection's failure is made up."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import pytest
from kubernetes_asyncio import client, config

from kubesessions.api import names
from kubesessions.control.act.pool import Pooling
from kubesessions.control.decide import children, pool
from kubesessions.control.settings import OperatorSettings
from kubesessions.kube.kubeapi import Kube
from tests.conftest import Cluster

pytestmark = pytest.mark.cluster


class CutOnce:
    """A Kube whose first merge patch fails as a cut connection, before it is sent or after
    the API server applied it."""

    def __init__(self, kube: Kube, landed: bool) -> None:
        self.kube, self.landed, self.patches = kube, landed, 0

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patches += 1
        if self.patches == 1 and not self.landed:
            raise aiohttp.ServerDisconnectedError()
        reply = await self.kube.merge_patch(path, body)
        if self.patches == 1:
            raise aiohttp.ServerDisconnectedError()
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kube, name)


def pool_pod(namespace: str) -> dict[str, Any]:
    # Bound to a node that does not exist: never run, only claimed.
    return {
        "metadata": {
            "name": "counter-pool-x",
            "namespace": namespace,
            "labels": {names.POOL_LABEL: "counter"},
        },
        "spec": {"nodeName": "nowhere", "containers": [{"name": "worker", "image": "worker"}]},
    }


@pytest.mark.parametrize("landed", [True, False], ids=["reply-lost", "never-sent"])
async def test_a_claim_cut_off_is_read_back_not_lost(kube: Cluster, namespace: str, landed: bool) -> None:
    async with await config.new_client_from_config(config_file=str(kube.kubeconfig)) as api:
        core = client.CoreV1Api(api)
        await core.create_namespaced_pod(namespace, pool_pod(namespace))
        # Ready, as the claim needs: a status written as a kubelet would.
        ready = {"status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "True"}]}}
        created = api.sanitize_for_serialization(
            await core.patch_namespaced_pod_status("counter-pool-x", namespace, ready)
        )
        faulty = CutOnce(Kube(api), landed)
        pooling = Pooling(
            cast(Kube, faulty), OperatorSettings(), {}, cast(Any, None), lambda _: None, cast(Any, None)
        )
        session = children.SessionRef(namespace=namespace, name="s0", uid="uid-of-s0")
        taken = await pooling._take(session, pool.member(created))
        assert taken is not None, "a claim cut off was given up: the session would start cold"
        assert pool.claimed_at(taken, "uid-of-s0") is not None
        # A landed claim is read back, not patched again; one never sent is sent again.
        assert faulty.patches == (1 if landed else 2)
        stored = await core.read_namespaced_pod("counter-pool-x", namespace)
        assert stored.metadata.labels.get(names.SESSION_LABEL) == "s0"
        assert names.POOL_LABEL not in stored.metadata.labels
