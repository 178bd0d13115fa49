"""`kubesessions localcluster up | down | status | env`: a real control plane on loopback.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes
on free 127.0.0.1 ports with certificates made for this cluster, plus the process node
(see :mod:`kubesessions.localcluster.node`) and the state store of suspended sessions (see
:mod:`kubesessions.localcluster.objectstore`). Everything lives in one state directory.
"""

from __future__ import annotations

import json
import shlex
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kubesessions.localcluster import controlplane, kubeletnode, objectstore, processes
from kubesessions.localcluster.binaries import (
    CONTROL_PLANE,
    KUBELET_NODE,
    STATE_STORE,
    ensure_binaries,
    find_binary,
)
from kubesessions.localcluster.certs import Authority, Pair, service_account_key
from kubesessions.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubesessions.localcluster.logserver import KUBELET_CLIENT
from kubesessions.localcluster.nodeconfig import HOST_IP, NodeConfig
from kubesessions.localcluster.podrunner import remove_short_links
from kubesessions.localcluster.ports import free_port as free_port

# Re-exported: callers reach the cluster's state through this module.
from kubesessions.localcluster.state import ClusterError as ClusterError
from kubesessions.localcluster.state import ClusterState as ClusterState
from kubesessions.localcluster.state import StateDir as StateDir
from kubesessions.localcluster.state import default_state_dir as default_state_dir
from kubesessions.localcluster.state import leftover_pod_processes

STARTUP_TIMEOUT = 90.0


def running_state(state_dir: StateDir) -> ClusterState | None:
    """The saved state if every process it names is still alive."""
    state = state_dir.load()
    if state is None or not state.processes:
        return None
    return state if all(processes.alive(p) for p in state.processes) else None


def up(state_dir: StateDir, node: NodeConfig, log: Callable[[str], None] = print) -> ClusterState:
    """Start the cluster and wait until it is ready to run pods."""
    existing = state_dir.load()
    if existing is not None:
        if running_state(state_dir) is not None:
            raise ClusterError(
                f"a local cluster is already running from {state_dir.root} "
                f"(API server {existing.server}); use it (`{command(state_dir, 'env')}`) "
                f"or stop it first (`{command(state_dir, 'down')}`)"
            )
        log(f"state in {state_dir.root} is from a cluster that is no longer fully running;")
        log("stopping what is left of it and starting afresh")
        down(state_dir, log=log)
    started = time.monotonic()
    kubelet = node.kind == "kubelet"
    if kubelet:
        kubeletnode.preflight()
    bins = ensure_binaries(CONTROL_PLANE + STATE_STORE + ((*KUBELET_NODE, "kubectl") if kubelet else ()))
    _fresh(state_dir)
    ports = {
        name: free_port()
        for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", *objectstore.PORTS)
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    ca, pki = _make_pki(state_dir, server, node.name, kubelet)
    state = ClusterState(server=server, ports=ports, node=node)

    def launch(name: str, argv: list[str]) -> None:
        state.processes.append(processes.spawn(name, argv, state_dir.logs / f"{name}.log"))
        state_dir.save(state)  # saved as each starts, so `down` can stop a half-made cluster

    try:
        if kubelet:
            kubeletnode.bridge_up()
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        launch("etcd", controlplane.etcd_args(bins["etcd"], state_dir, ports))
        # Where the node's pods reach it: the process node's pods share the machine's loopback,
        # the kubelet node's containers reach the machine at their bridge's gateway address.
        store = objectstore.launch(
            state_dir.root, kubeletnode.NETWORK.gateway if kubelet else HOST_IP, bins["weed"], launch, ports
        )
        _await(f"{etcd_url}/health", "etcd", state_dir, state)
        apiserver = controlplane.apiserver_args(bins["kube-apiserver"], state_dir, ports, pki)
        launch("kube-apiserver", apiserver + (kubeletnode.apiserver_args(pki) if kubelet else []))
        admin_tls = _tls(pki["ca"], pki["admin"])
        _await(f"{server}/readyz", "kube-apiserver", state_dir, state, admin_tls)
        launch(
            "kube-controller-manager",
            controlplane.controller_manager_args(bins["kube-controller-manager"], state_dir, ports, pki),
        )
        launch("kube-scheduler", controlplane.scheduler_args(bins["kube-scheduler"], state_dir, ports))
        if kubelet:
            kubeletnode.start(state_dir.root, node, bins, server, ca, pki, launch, free_port, Path.cwd())
        else:
            launch(
                "process-node",
                [
                    sys.executable,
                    "-m",
                    "kubesessions.localcluster.node",
                    "--state-dir",
                    str(state_dir.root),
                ],
            )
        probe_tls = _tls(pki["ca"], None, verify=False)
        _await(
            f"https://127.0.0.1:{ports['controller-manager']}/healthz",
            "kube-controller-manager",
            state_dir,
            state,
            probe_tls,
        )
        _await(
            f"https://127.0.0.1:{ports['scheduler']}/healthz", "kube-scheduler", state_dir, state, probe_tls
        )
        _await_node_schedulable(server, admin_tls, node.name, state_dir, state)
        if kubelet:
            kubeletnode.advertise_gpus(bins["kubectl"], state_dir.kubeconfig, node)
            kubeletnode.start_policy_engine(
                state_dir.root,
                node,
                bins,
                server,
                ca,
                pki,
                launch,
                free_port,
                state_dir.logs / f"{kubeletnode.POLICY_ENGINE}.log",
            )
        objectstore.write_secret(server, admin_tls, objectstore.ready(state_dir.root, store))
    except BaseException:
        down(state_dir, log=lambda _: None)
        raise
    log(f"local cluster ready in {time.monotonic() - started:.1f}s: API server {server}")
    return state


def down(state_dir: StateDir, log: Callable[[str], None] = print) -> None:
    """Stop exactly the processes `up` started, newest first, then any pod processes left."""
    state = state_dir.load()
    if state is None:
        log(f"no local cluster state in {state_dir.root}; nothing to stop")
        return
    if state.node.kind == "kubelet":
        kubectl = find_binary("kubectl")
        kubeletnode.drain(state_dir.root, state.processes, kubectl, state_dir.kubeconfig)
    # Reverse start order, in three waves: the node first (it stops its pods while the API is
    # still up), then the API server and its clients together, etcd last (an API server whose
    # etcd is gone hangs in shutdown).
    waves = [
        [p for p in state.processes if p.name == "process-node"],
        [p for p in state.processes if p.name not in ("process-node", "etcd", "seaweedfs")],
        [p for p in state.processes if p.name == "etcd"],
    ]
    stuck = [p for wave in waves for p in processes.stop(wave)]
    # SeaweedFS stops its servers within a second of SIGTERM, then its master waits on for the
    # filer it just stopped: what it holds is written by then, so it gets a short grace.
    stuck += processes.stop([p for p in state.processes if p.name == "seaweedfs"], grace=3.0)
    stuck += processes.stop(leftover_pod_processes(state_dir.node_dir))
    remove_short_links(state_dir.node_dir)
    objectstore.clean(state_dir.root, state.ports)
    if state.node.kind == "kubelet":
        problems = kubeletnode.cleanup(state_dir.root)
        if problems:
            raise ClusterError(f"kubelet node left behind: {problems}")
    if stuck:
        raise ClusterError(f"could not stop: {[(p.name, p.pid) for p in stuck]}")
    state.processes = []
    state_dir.save(state)
    log(f"local cluster in {state_dir.root} stopped")


def restart_process(state_dir: StateDir, name: str) -> processes.ProcessRecord:
    """Stop one of the cluster's processes and start it again with the same command line and
    log (fault drills: the kubelet node's policy engine restarted under traffic)."""
    state = state_dir.load()
    record = next((p for p in state.processes if p.name == name), None) if state else None
    if state is None or record is None or not processes.alive(record):
        raise ClusterError(f"no running {name} in the local cluster in {state_dir.root}")
    argv = [a.decode() for a in Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    if processes.stop([record]):
        raise ClusterError(f"could not stop {name} (pid {record.pid})")
    fresh = processes.spawn(name, argv, state_dir.logs / f"{name}.log")
    state.processes = [fresh if p == record else p for p in state.processes]
    state_dir.save(state)
    return fresh


def status(state_dir: StateDir) -> dict[str, Any]:
    state = state_dir.load()
    if state is None:
        return {"running": False, "stateDir": str(state_dir.root)}
    return {
        "running": running_state(state_dir) is not None,
        "stateDir": str(state_dir.root),
        "server": state.server,
        "kubeconfig": str(state_dir.kubeconfig),
        "ports": state.ports,
        "processes": {p.name: {"pid": p.pid, "alive": processes.alive(p)} for p in state.processes},
        "node": asdict(state.node),
    }


def command(state_dir: StateDir, action: str) -> str:
    """The `kubesessions localcluster` command line for this cluster: a state directory other
    than the default has to be named on every command, not just on `up`."""
    line = f"kubesessions localcluster {action}"
    if state_dir.root != StateDir(default_state_dir()).root:
        line += f" --state-dir {shlex.quote(str(state_dir.root))}"
    return line


def env_lines(state_dir: StateDir) -> list[str]:
    """Shell lines that point kubectl (and our tools) at the cluster."""
    if running_state(state_dir) is None:
        raise ClusterError(
            f"no local cluster is running from {state_dir.root}; start one with `{command(state_dir, 'up')}`"
        )
    bins = ensure_binaries(("kubectl", "helm"))
    path_dirs = sorted({str(p.parent) for p in bins.values()})
    store = objectstore.operator_env(state_dir.root)
    # The store's settings first, for an operator run by hand (kubesessions operator).
    return [
        *(f"export {key}={shlex.quote(value)}" for key, value in store.items()),
        f"export KUBECONFIG={state_dir.kubeconfig}",
        f"export PATH={':'.join(path_dirs)}:$PATH",
    ]


def _fresh(state_dir: StateDir) -> None:
    for sub in (
        state_dir.pki,
        state_dir.etcd_data,
        state_dir.node_dir,
        state_dir.root / "kubeconfigs",
        objectstore.data_dir(state_dir.root),
    ):
        shutil.rmtree(sub, ignore_errors=True)
    state_dir.root.mkdir(parents=True, exist_ok=True)
    state_dir.logs.mkdir(exist_ok=True)
    state_dir.state_file.unlink(missing_ok=True)
    objectstore.settings_file(state_dir.root).unlink(missing_ok=True)


def _make_pki(
    state_dir: StateDir, server: str, node_name: str, kubelet: bool
) -> tuple[Authority, dict[str, Pair]]:
    ca = Authority(state_dir.pki)
    pki = {
        "ca": ca.pair,
        "apiserver": ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "127.0.0.1",
                "localhost",
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                *(kubeletnode.server_names() if kubelet else ()),
            ),
            client=False,
        ),
        "admin": ca.issue("admin", "kube-sessions-admin", organizations=("system:masters",)),
        "controller-manager": ca.issue("controller-manager", "system:kube-controller-manager"),
        "scheduler": ca.issue("scheduler", "system:kube-scheduler"),
        # The process node authenticates as a real node, so the Node authorizer and
        # NodeRestriction limit it exactly as they would a kubelet; the same certificate
        # serves its log endpoint, at its InternalIP.
        "node": ca.issue(
            "node", f"system:node:{node_name}", organizations=("system:nodes",), server_names=(HOST_IP,)
        ),
        # What the API server shows nodes when it proxies `kubectl logs` to them.
        "kubelet-client": ca.issue("kubelet-client", KUBELET_CLIENT, organizations=("system:masters",)),
    }
    if kubelet:
        pki.update(kubeletnode.issue_certs(ca))
    service_account_key(state_dir.pki / "sa.key")
    for name in ("controller-manager", "scheduler", "node"):
        write_kubeconfig(
            state_dir.component_kubeconfig(name), build_kubeconfig(server, ca.pair.cert, pki[name])
        )
    write_kubeconfig(state_dir.kubeconfig, build_kubeconfig(server, ca.pair.cert, pki["admin"]))
    return ca, pki


def _tls(ca: Pair, client: Pair | None, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    if not verify:
        # Controller-manager and scheduler serve self-signed certs; /healthz is public.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client is not None:
        ctx.load_cert_chain(client.cert, client.key)
    return ctx


def _check_alive(state_dir: StateDir, state: ClusterState) -> None:
    for record in state.processes:
        if not processes.alive(record):
            log_file = state_dir.logs / f"{record.name}.log"
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            raise ClusterError(f"{record.name} exited during start-up; its log ends:\n{tail}")


def _await(
    url: str,
    what: str,
    state_dir: StateDir,
    state: ClusterState,
    tls: ssl.SSLContext | None = None,
) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        _check_alive(state_dir, state)
        try:
            with urllib.request.urlopen(url, context=tls, timeout=5) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ClusterError(f"{what} was not ready at {url} within {STARTUP_TIMEOUT:.0f}s: {last}")


def _await_node_schedulable(
    server: str, tls: ssl.SSLContext, node: str, state_dir: StateDir, state: ClusterState
) -> None:
    """Ready, and the not-ready taint the API server adds at registration is gone."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "not registered"
    while time.monotonic() < deadline:
        _check_alive(state_dir, state)
        try:
            url = f"{server}/api/v1/nodes/{node}"
            with urllib.request.urlopen(url, context=tls, timeout=5) as resp:  # noqa: S310
                obj = json.load(resp)
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in obj.get("status", {}).get("conditions", [])
            )
            taints = [t["key"] for t in obj.get("spec", {}).get("taints", []) or []]
            if ready and "node.kubernetes.io/not-ready" not in taints:
                return
            last = f"ready={ready} taints={taints}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ClusterError(f"node {node} did not become schedulable within {STARTUP_TIMEOUT:.0f}s: {last}")
