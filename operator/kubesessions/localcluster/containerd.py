"""containerd for the kubelet node: its config, the CNI network and the `ctr` calls.

Everything it writes lives in the cluster's state directory (config, content, snapshots,
sockets, CNI config and IP allocations); nothing under /etc changes. The pod network is one
bridge on this machine: no masquerade and no default route, so no pod traffic leaves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CNI_BIN_DIR = Path("/usr/lib/cni")
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin uses


@dataclass(frozen=True)
class PodNetwork:
    """The bridge and the addresses pods get on it."""

    bridge: str = "kubesess0"
    subnet: str = "10.250.0.0/24"
    gateway: str = "10.250.0.1"
    service_cidr: str = "10.96.0.0/16"

    @property
    def prefix(self) -> int:
        return int(self.subnet.split("/")[1])


@dataclass(frozen=True)
class ContainerdPaths:
    root: Path

    config = property(lambda self: self.root / "config.toml")
    socket = property(lambda self: self.root / "containerd.sock")
    content = property(lambda self: self.root / "root")
    state = property(lambda self: self.root / "state")
    cni_conf_dir = property(lambda self: self.root / "cni" / "net.d")
    ipam_dir = property(lambda self: self.root / "cni" / "ipam")


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for these values


def config_toml(paths: ContainerdPaths, sandbox_image: str) -> str:
    """containerd 1.6 (config version 2) with its CRI plugin set up for this machine."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f"root = {_toml(str(paths.content))}",
            f"state = {_toml(str(paths.state))}",
            # Snapshotters this machine cannot use only log errors at start: leave them out.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
            "[grpc]",
            f"  address = {_toml(str(paths.socket))}",
            "[ttrpc]",
            f"  address = {_toml(str(paths.socket) + '.ttrpc')}",
            f"[{cri}]",
            f"  sandbox_image = {_toml(sandbox_image)}",
            # Without CAP_SYS_RESOURCE (this VM) a negative oom_score_adj is refused and every
            # sandbox fails in runc ("can't get final child's PID from pipe: EOF").
            "  restrict_oom_score_adj = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",  # the kubelet's cgroupfs driver
            f"[{cri}.cni]",
            f"  bin_dir = {_toml(str(CNI_BIN_DIR))}",
            f"  conf_dir = {_toml(str(paths.cni_conf_dir))}",
            "",
        ]
    )


def cni_conflist(network: PodNetwork, ipam_dir: Path) -> dict[str, object]:
    """One bridge with the node as gateway; the only route out of a pod is to Service IPs
    (through the node, where kube-proxy translates them), never a default route."""
    return {
        "cniVersion": "0.4.0",
        "name": "kube-sessions",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": True,
                "isDefaultGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(ipam_dir),
                    "ranges": [[{"subnet": network.subnet, "gateway": network.gateway}]],
                    "routes": [{"dst": network.service_cidr, "gw": network.gateway}],
                },
            }
        ],
    }


def write_config(paths: ContainerdPaths, network: PodNetwork, sandbox_image: str) -> None:
    for sub in (paths.root, paths.cni_conf_dir, paths.ipam_dir):
        sub.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(config_toml(paths, sandbox_image))
    conflist = cni_conflist(network, paths.ipam_dir)
    (paths.cni_conf_dir / "10-kube-sessions.conflist").write_text(json.dumps(conflist, indent=2))


def missing_cni_plugins() -> list[str]:
    return [name for name in ("bridge", "host-local", "loopback") if not (CNI_BIN_DIR / name).is_file()]


def ctr(paths: ContainerdPaths, *args: str, timeout: float = 300, check: bool = True) -> str:
    binary = shutil.which("ctr")
    if binary is None:
        raise RuntimeError("ctr (Debian's containerd) is not installed: run `make node-packages`")
    proc = subprocess.run(
        [binary, "--address", str(paths.socket), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args[:3])} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def import_archive(paths: ContainerdPaths, archive: Path) -> None:
    ctr(paths, "images", "import", str(archive))


def kill_all_tasks(paths: ContainerdPaths) -> None:
    """What the kubelet left running: killed and deleted, so their shims exit."""
    for task in ctr(paths, "tasks", "list", "--quiet").split():
        ctr(paths, "tasks", "kill", "--signal", "SIGKILL", task, check=False)
        ctr(paths, "tasks", "delete", "--force", task, check=False)
