"""The command lines of the control plane's processes (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler), as `localcluster up` starts them."""

from __future__ import annotations

from pathlib import Path

from kubesessions.localcluster.certs import Pair
from kubesessions.localcluster.ports import NODE_PORT_FLAG
from kubesessions.localcluster.state import StateDir

SERVICE_CIDR = "10.96.0.0/16"


def etcd_args(binary: Path, state_dir: StateDir, ports: dict[str, int]) -> list[str]:
    client = f"http://127.0.0.1:{ports['etcd']}"
    peer = f"http://127.0.0.1:{ports['etcd-peer']}"
    return [
        str(binary),
        f"--data-dir={state_dir.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--listen-metrics-urls=",
        # A throwaway development cluster: losing the last writes on a crash is fine.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(
    binary: Path, state_dir: StateDir, ports: dict[str, int], pki: dict[str, Pair]
) -> list[str]:
    sa_key = state_dir.pki / "sa.key"
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
        f"--cert-dir={state_dir.pki}",
        f"--tls-cert-file={pki['apiserver'].cert}",
        f"--tls-private-key-file={pki['apiserver'].key}",
        f"--client-ca-file={pki['ca'].cert}",
        f"--secure-port={ports['apiserver']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--authorization-mode=Node,RBAC",
        f"--kubelet-client-certificate={pki['kubelet-client'].cert}",
        f"--kubelet-client-key={pki['kubelet-client'].key}",
        f"--kubelet-certificate-authority={pki['ca'].cert}",
        # Nodes are reached at their InternalIP: their names are not in the machine's DNS.
        "--kubelet-preferred-address-types=InternalIP",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        NODE_PORT_FLAG,  # where free_port() never lands
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa_key}",
        f"--service-account-signing-key-file={sa_key}",
        "--allow-privileged=true",
        "--profiling=false",
        "--v=1",
    ]


def _component_common(name: str, state_dir: StateDir, port: int) -> list[str]:
    kubeconfig = state_dir.component_kubeconfig(name)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={state_dir.root / 'pki' / name}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_args(
    binary: Path, state_dir: StateDir, ports: dict[str, int], pki: dict[str, Pair]
) -> list[str]:
    return [
        str(binary),
        *_component_common("controller-manager", state_dir, ports["controller-manager"]),
        f"--service-account-private-key-file={state_dir.pki / 'sa.key'}",
        f"--root-ca-file={pki['ca'].cert}",
        f"--cluster-signing-cert-file={pki['ca'].cert}",
        f"--cluster-signing-key-file={pki['ca'].key}",
        "--use-service-account-credentials=true",
        # Nothing here allocates pod CIDRs or talks to a cloud.
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
        "--node-monitor-period=2s",
    ]


def scheduler_args(binary: Path, state_dir: StateDir, ports: dict[str, int]) -> list[str]:
    return [str(binary), *_component_common("scheduler", state_dir, ports["scheduler"])]
