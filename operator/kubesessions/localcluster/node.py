"""The process node: a development and test node whose pods run as local processes.

It is NOT a kubelet replacement. It registers a Node (with virtual cpu, memory and
``nvidia.com/gpu`` capacity), renews its Lease, and runs the pods the scheduler binds to
it: each container as a process in its own process group, each pod on its own loopback
address (127.0.x.y) as podIP. It honours env (literals, Secrets, ConfigMaps, downward
API), HTTP/TCP/exec probes, restart policies, termination messages and graceful
deletion. It has no images, no network or mount namespaces, no resource limits and no
``kubectl exec``; container output goes to files in the state directory, served to
``kubectl logs`` (:mod:`kubesessions.localcluster.logserver`).

Run by ``kubesessions localcluster up`` as ``python -m kubesessions.localcluster.node``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api.names import JSON
from kubesessions.common import logs
from kubesessions.common.timefmt import rfc3339
from kubesessions.kube.informer import Informer
from kubesessions.kube.kubeapi import STRATEGIC_PATCH, Kube
from kubesessions.localcluster import processes
from kubesessions.localcluster.addresses import AddressPool, claim_address_block
from kubesessions.localcluster.certs import Pair
from kubesessions.localcluster.logserver import ContainerLog, LogServer
from kubesessions.localcluster.nodeconfig import HOST_IP, NodeConfig
from kubesessions.localcluster.nodeobject import DESCRIPTION, node_object, node_status
from kubesessions.localcluster.podrunner import PodRunner
from kubesessions.localcluster.podservices import PodServices
from kubesessions.localcluster.state import StateDir, leftover_pod_processes

log = logging.getLogger("kubesessions.processnode")

LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10
STATUS_REPORT_SECONDS = 60
SERVICE_ACCOUNT_TOKEN_SECONDS = 24 * 3600  # a dev node does not rotate tokens


class ProcessNode(PodServices):
    def __init__(
        self, api: Kube, cfg: NodeConfig, node_dir: Path, api_port: int, ca_data: str, block: int = 0
    ) -> None:
        self.api = api
        self.ca_data = ca_data
        self.cfg = cfg
        self.node_dir = node_dir
        self.api_port = api_port
        self.addresses = AddressPool(block)
        self.runners: dict[str, PodRunner] = {}  # by pod uid
        self.log_port = 0  # set once the log server listens
        self._node_uid = ""
        self._since = rfc3339(precision="seconds")

    # -- PodServices, used by the runners -------------------------------------------

    @property
    def image_map(self) -> Mapping[str, str]:
        return self.cfg.image_map

    def base_env(self) -> dict[str, str]:
        keep = ("HOME", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
        base = {k: os.environ[k] for k in keep if k in os.environ}
        # Console scripts of the venv the node runs from (kubesessions-worker) come first.
        base["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        base["KUBERNETES_SERVICE_HOST"] = HOST_IP
        base["KUBERNETES_SERVICE_PORT"] = str(self.api_port)
        base["KUBESESSIONS_PROCESS_NODE"] = self.cfg.name
        return base

    async def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        plural = "secrets" if kind == "secret" else "configmaps"
        try:
            obj = await self.api.get(f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data: dict[str, str] = {}
        if kind == "secret":
            for key, value in (obj.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode(errors="replace")
        else:
            data.update(obj.get("data") or {})
        return data

    async def patch_status(self, pod: JSON, status: JSON) -> JSON | None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body = {"metadata": {"uid": meta["uid"]}, "status": status}
        try:
            return await self.api.request("PATCH", path, body=body, content_type=STRATEGIC_PATCH)
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or replaced by a pod of the same name
                return None
            raise

    async def event(self, pod: JSON, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        now = rfc3339(precision="microseconds")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "process-node", "host": self.cfg.name},
            "firstTimestamp": now[:19] + "Z",
            "lastTimestamp": now[:19] + "Z",
            "count": 1,
            "reportingComponent": "kubesessions.io/process-node",
            "reportingInstance": self.cfg.name,
        }
        try:
            await self.api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body=body)
        except ApiException as exc:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], exc)

    async def service_account_kubeconfig(self, pod: JSON) -> JSON | None:
        """Token from the TokenRequest API, bound to the pod (the Node authorizer allows it for
        pods on this node), so RBAC applies to the pod as it would on a real cluster."""
        spec, meta = pod["spec"], pod["metadata"]
        account = spec.get("serviceAccountName")
        if not account or spec.get("automountServiceAccountToken") is False:
            return None
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": SERVICE_ACCOUNT_TOKEN_SECONDS,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
        token = (await self.api.request("POST", path, body=request))["status"]["token"]
        name = f"{meta['namespace']}-{account}"
        cluster = {"server": self.api.server, "certificate-authority-data": self.ca_data}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": cluster}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [
                {"name": name, "context": {"cluster": "local", "user": name, "namespace": meta["namespace"]}}
            ],
            "current-context": name,
        }

    async def remove(self, pod: JSON) -> None:
        """The last step of a graceful deletion: delete the object for good."""
        meta = pod["metadata"]
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        try:
            await self.api.request("DELETE", path, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        for runner in self.runners.values():
            meta = runner.pod["metadata"]
            if (meta["namespace"], meta["name"]) == (namespace, pod):
                return runner.container_log(container)
        return None

    # -- node lifecycle ----------------------------------------------------------------

    async def register(self) -> None:
        obj = node_object(self.cfg)
        try:
            created = await self.api.request("POST", "/api/v1/nodes", body=obj)
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch = {
                "metadata": {
                    "labels": obj["metadata"]["labels"],
                    "annotations": obj["metadata"]["annotations"],
                }
            }
            created = await self.api.request(
                "PATCH", f"/api/v1/nodes/{self.cfg.name}", body=patch, content_type=STRATEGIC_PATCH
            )
        self._node_uid = created["metadata"]["uid"]
        await self.report_status()

    async def report_status(self) -> None:
        await self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.cfg.name}/status",
            body={"status": node_status(self.cfg, rfc3339(precision="seconds"), self._since, self.log_port)},
            content_type=STRATEGIC_PATCH,
        )

    async def renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.cfg.name}"
        spec = {
            "holderIdentity": self.cfg.name,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": rfc3339(precision="microseconds"),
        }
        try:
            await self.api.request("PATCH", path, body={"spec": spec}, content_type=STRATEGIC_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.cfg.name,
                "uid": self._node_uid,
            }
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.cfg.name, "ownerReferences": [owner]},
                "spec": spec,
            }
            await self.api.request("POST", path.rsplit("/", 1)[0], body=lease)

    async def heartbeat(self) -> None:
        ticks = 0
        while True:
            try:
                await self.renew_lease()
                if ticks % (STATUS_REPORT_SECONDS // LEASE_RENEW_SECONDS) == 0:
                    await self.report_status()
            except (TimeoutError, ApiException, OSError, aiohttp.ClientError) as exc:
                log.warning("heartbeat failed (will retry): %s", exc)
            ticks += 1
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    async def watch_pods(self) -> None:
        informer = Informer(
            "pods on this node",
            client.CoreV1Api(self.api.api).list_pod_for_all_namespaces,
            (),
            self._listed,
            self._changed,
            {"field_selector": f"spec.nodeName={self.cfg.name}"},
            max_backoff=1.0,  # a node that waits long after an API server restart starts pods late
        )
        await informer.run()

    def _listed(self, pods: list[JSON]) -> None:
        seen = {pod["metadata"]["uid"] for pod in pods}
        for pod in pods:
            self.sync(pod)
        for uid in set(self.runners) - seen:
            self.runners[uid].vanished()

    def _changed(self, kind: str, pod: JSON) -> None:
        if kind == "DELETED":
            runner = self.runners.get(pod["metadata"]["uid"])
            if runner:
                runner.vanished()
        else:
            self.sync(pod)

    def sync(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        runner = self.runners.get(uid)
        if runner is None:
            runner = PodRunner(pod, self, self.node_dir / "pods" / uid, self.addresses)
            self.runners[uid] = runner
            runner.start(on_done=lambda: self._forget(uid))
        else:
            runner.update(pod)

    def _forget(self, uid: str) -> None:
        runner = self.runners.pop(uid, None)
        if runner is not None:
            runner.remove_files()

    async def shutdown(self) -> None:
        """Stop every container (the pods stay; a restarted node reports them lost)."""
        await asyncio.gather(*(r.stop_processes() for r in list(self.runners.values())))


async def run(state_dir: Path) -> None:
    paths = StateDir(state_dir)
    state = paths.load()
    if state is None:
        raise SystemExit(f"no cluster state in {state_dir}")
    # Processes left by an earlier run of this node cannot be re-adopted: stop them.
    processes.stop(leftover_pod_processes(paths.node_dir), grace=2)
    block, _lock = claim_address_block(Path(tempfile.gettempdir()) / "kube-sessions-address-blocks")
    api = Kube(await config.new_client_from_config(config_file=str(paths.component_kubeconfig("node"))))
    ca_data = base64.b64encode((paths.pki / "ca.crt").read_bytes()).decode()
    node = ProcessNode(api, state.node, paths.node_dir, state.ports["apiserver"], ca_data, block)
    logs_server = LogServer(node, Pair(paths.pki / "node.crt", paths.pki / "node.key"), paths.pki / "ca.crt")
    node.log_port = await logs_server.start(HOST_IP)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.register()
    log.info("node %s registered, pod IPs 127.%d.x.y: %s", state.node.name, block, DESCRIPTION)
    tasks = [asyncio.create_task(node.heartbeat()), asyncio.create_task(node.watch_pods())]
    await stop.wait()
    log.info("stopping: ending every container process")
    for task in tasks:
        task.cancel()
    await node.shutdown()
    await logs_server.stop()
    await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    logs.setup()
    asyncio.run(run(args.state_dir))


if __name__ == "__main__":
    main()
