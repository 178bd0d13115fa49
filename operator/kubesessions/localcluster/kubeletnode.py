"""The kubelet node: a real kubelet, containerd + runc and kube-proxy on this machine.

`localcluster up --node kubelet` runs the same control plane as the process node, then:

- a bridge (``kubesess0``) with the node's address on it, so pods reach the API server (it
  listens there too and advertises it for the ``kubernetes`` Service; kube-proxy translates
  the Service IP); pods get no default route and nothing is masqueraded;
- containerd with its CRI plugin (config, content, sockets and CNI config all in the state
  directory), the images made by :mod:`images` imported into it;
- kube-proxy (iptables) and the kubelet, which registers the node with the advertised
  ``nvidia.com/gpu`` count and product label (no real GPU is attached);
- kube-router's NetworkPolicy controller (iptables + ipset; its router and service proxy
  off), once the node is registered: it enforces the pods' NetworkPolicies, and `up` returns
  after its first full sync.

`down` drains the pods through the API, stops everything, and removes what the runtime
left: mounts under the state directory, network namespaces, the bridge, kube-proxy's and
kube-router's chains, kube-router's ipsets (it leaves both behind when stopped).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kubesessions.localcluster import containerd, images, processes
from kubesessions.localcluster.certs import Authority, Pair
from kubesessions.localcluster.controlplane import SERVICE_CIDR
from kubesessions.localcluster.kubeconfig import build_kubeconfig, write_kubeconfig
from kubesessions.localcluster.nodeconfig import HOST_IP, NodeConfig
from kubesessions.localcluster.ports import NODE_PORT_FLAG

NETWORK = containerd.PodNetwork()
NODE_PROCESSES = ("containerd", "kube-proxy", "kubelet", "kube-router")
POLICY_ENGINE = "kube-router"
POLICY_ENGINE_USER = "kube-sessions:kube-router"
POLICY_ENGINE_TIMEOUT = 90.0
# kube-router's ipsets: policy peers (KUBE-SRC-/KUBE-DST- + 16 base32 characters of a hash),
# the temporary sets of its atomic swaps (TMP-), each maybe IPv6 ("inet6:").
KUBE_ROUTER_IPSET = re.compile(r"(inet6:)?(KUBE-SRC-|KUBE-DST-|TMP-)[A-Z2-7]{16}")
# Logged (at --v=1) at the end of each full policy sync.
KUBE_ROUTER_SYNCED = "sync iptables took"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
NETNS_DIR = Path("/var/run/netns")
CGROUP_ROOT = Path("/sys/fs/cgroup")
EVICTION_DISK_FREE = "1Gi"  # the kubelet evicts pods below this much free disk


class NodeError(RuntimeError):
    """The kubelet node cannot run here, or could not be cleaned up."""


def preflight(euid: int | None = None) -> None:
    """Refuse early, installing nothing, where the kubelet node cannot run."""
    if (os.geteuid() if euid is None else euid) != 0:
        raise NodeError(
            "the kubelet node needs root (it runs containerd, mounts, a bridge and iptables "
            "rules): run `sudo kubesessions localcluster up --node kubelet`, or use the default "
            "process node (`kubesessions localcluster up`)"
        )
    missing = [tool for tool in ("containerd", "runc", "ctr", "buildah", "mmdebstrap", "iptables", "ip")]
    missing = [tool for tool in missing if shutil.which(tool) is None]
    missing += [f"CNI plugin {name}" for name in containerd.missing_cni_plugins()]
    if missing:
        raise NodeError(f"missing for the kubelet node: {', '.join(missing)}; run `make node-packages`")


def paths(state_root: Path) -> containerd.ContainerdPaths:
    return containerd.ContainerdPaths(state_root / "containerd")


def server_names() -> tuple[str, ...]:
    """The API server's certificate must also name the address pods reach it at."""
    return (NETWORK.gateway,)


def issue_certs(ca: Authority) -> dict[str, Pair]:
    return {
        # The API server's identity towards the kubelet (logs, exec); allowed everything.
        "kubelet-client": ca.issue(
            "kubelet-client", "kube-apiserver-kubelet-client", organizations=("system:masters",)
        ),
        # Bound to system:node-proxier by the API server's default RBAC.
        "kube-proxy": ca.issue("kube-proxy", "system:kube-proxy"),
        # The kubelet's serving certificate, from the cluster CA and naming the node's address:
        # the API server checks it (--kubelet-certificate-authority) for logs and exec.
        "kubelet-serving": ca.issue("kubelet-serving", "kubelet", server_names=(NETWORK.gateway,)),
        # Bound to the read-only ClusterRole of policy_engine_rbac().
        "kube-router": ca.issue("kube-router", POLICY_ENGINE_USER),
    }


def apiserver_args(pki: dict[str, Pair]) -> list[str]:
    """Appended to the API server's: later values of a flag win."""
    return [
        # Pods reach the API server on the bridge; loopback callers keep 127.0.0.1.
        "--bind-address=0.0.0.0",
        f"--advertise-address={NETWORK.gateway}",
        f"--kubelet-client-certificate={pki['kubelet-client'].cert}",
        f"--kubelet-client-key={pki['kubelet-client'].key}",
        # By IP: the node's name is not in this machine's DNS.
        "--kubelet-preferred-address-types=InternalIP",
    ]


def bridge_up() -> None:
    """The pod bridge with the node's gateway address, before the API server binds it."""
    if not Path(f"/sys/class/net/{NETWORK.bridge}").exists():
        _ip("link", "add", NETWORK.bridge, "type", "bridge")
    addresses = _ip("-o", "-4", "addr", "show", "dev", NETWORK.bridge)
    if f"{NETWORK.gateway}/" not in addresses:
        _ip("addr", "add", f"{NETWORK.gateway}/{NETWORK.prefix}", "dev", NETWORK.bridge)
    _ip("link", "set", NETWORK.bridge, "up")


def kubelet_config(
    node: NodeConfig, root: Path, ca: Path, ports: dict[str, int], serving: Pair | None = None
) -> dict[str, object]:
    tls = {"tlsCertFile": str(serving.cert), "tlsPrivateKeyFile": str(serving.key)} if serving else {}
    return {
        **tls,
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine: cgroup v1 (hybrid), no systemd cgroup manager, no swap.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/",
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{paths(root).socket}",
        # The node's address is its bridge address: the kubelet refuses a loopback node IP,
        # and the API server reaches the kubelet (logs, exec) there.
        "address": NETWORK.gateway,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": HOST_IP,
        "healthzPort": ports["kubelet-healthz"],
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "podLogsDir": str(root / "pod-logs"),
        "maxPods": node.pods,
        "serializeImagePulls": False,
        "registerWithTaints": (
            [{"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}] if node.gpu_taint else []
        ),
        # A shared development disk: evict only when it is really full. An absolute figure, not
        # a share: 2% of this VM's 252 GB disk is 5.4 GB, and a machine with 4.4 GB free (image
        # caches of other checkouts) evicted the operator and the gateway mid-run (CI, stop 32).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": EVICTION_DISK_FREE,
            "imagefs.available": EVICTION_DISK_FREE,
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusUpdateFrequency": "4s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "0s",
        "resolvConf": "",
        "shutdownGracePeriod": "0s",
    }


def start(
    state_root: Path,
    node: NodeConfig,
    bins: dict[str, Path],
    server: str,
    ca: Authority,
    pki: dict[str, Pair],
    launch: Callable[[str, list[str]], None],
    free_port: Callable[[], int],
    repo: Path,
) -> None:
    """containerd (with the images), kube-proxy and the kubelet; returns once they run."""
    remove_unheld_netns()  # an earlier node's, killed without a `down`
    ctd = paths(state_root)
    containerd.write_config(ctd, NETWORK, images.PAUSE_IMAGE)
    archives = images.build_all(repo).values()
    launch("containerd", [shutil.which("containerd") or "containerd", "--config", str(ctd.config)])
    _await_socket(ctd.socket)
    for archive in archives:  # content already there is not copied again
        containerd.import_archive(ctd, archive)
    kubeconfigs = state_root / "kubeconfigs"
    write_kubeconfig(
        kubeconfigs / "kube-proxy.kubeconfig", build_kubeconfig(server, ca.pair.cert, pki["kube-proxy"])
    )
    launch(
        "kube-proxy",
        [
            str(bins["kube-proxy"]),
            f"--kubeconfig={kubeconfigs / 'kube-proxy.kubeconfig'}",
            f"--hostname-override={node.name}",
            "--proxy-mode=iptables",
            f"--cluster-cidr={NETWORK.subnet}",
            f"--healthz-bind-address={HOST_IP}:{free_port()}",
            f"--metrics-bind-address={HOST_IP}:{free_port()}",
            # Leave the machine's conntrack and route_localnet settings as they are.
            "--conntrack-max-per-core=0",
            "--iptables-localhost-nodeports=false",
            "--v=1",
        ],
    )
    kubelet_dir = state_root / "kubelet"
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    ports = {"kubelet": free_port(), "kubelet-healthz": free_port()}
    config = kubelet_config(node, state_root, ca.pair.cert, ports, pki["kubelet-serving"])
    (kubelet_dir / "config.json").write_text(json.dumps(config, indent=2))
    launch(
        "kubelet",
        [
            str(bins["kubelet"]),
            f"--config={kubelet_dir / 'config.json'}",
            f"--kubeconfig={kubeconfigs / 'node.kubeconfig'}",
            f"--root-dir={kubelet_dir / 'root'}",
            f"--cert-dir={kubelet_dir / 'pki'}",
            f"--hostname-override={node.name}",
            f"--node-ip={NETWORK.gateway}",
            f"--node-labels={GPU_PRODUCT_LABEL}={node.gpu_product}",
            "--v=1",
        ],
    )


def policy_engine_rbac() -> dict[str, object]:
    """What kube-router's policy controller reads (its informers), and nothing to write but
    events."""
    read = ["get", "list", "watch"]
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": POLICY_ENGINE_USER},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["namespaces", "pods", "nodes", "services", "endpoints"],
                        "verbs": read,
                    },
                    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
                    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                    {
                        "apiGroups": ["", "events.k8s.io"],
                        "resources": ["events"],
                        "verbs": ["create", "patch"],
                    },
                ],
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": POLICY_ENGINE_USER},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": POLICY_ENGINE_USER,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": POLICY_ENGINE_USER}
                ],
            },
        ],
    }


def policy_engine_args(binary: Path, kubeconfig: Path, node_name: str, health_port: int) -> list[str]:
    """kube-router with only its NetworkPolicy controller: kube-proxy keeps the Services and
    the bridge CNI the routes."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--hostname-override={node_name}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # It lets every pod reach the node on these ports: the cluster's own stay out of them.
        NODE_PORT_FLAG,
        # Its health server listens on every address; a free port, not the fixed 20244.
        f"--health-port={health_port}",
        "--metrics-port=0",
        "--v=1",
    ]


def start_policy_engine(
    state_root: Path,
    node: NodeConfig,
    bins: dict[str, Path],
    server: str,
    ca: Authority,
    pki: dict[str, Pair],
    launch: Callable[[str, list[str]], None],
    free_port: Callable[[], int],
    log: Path,
) -> None:
    """kube-router, after the node is registered (it reads its Node's addresses at start);
    returns after its first full sync, so policies hold before `up` returns."""
    kubeconfig = state_root / "kubeconfigs" / "kube-router.kubeconfig"
    write_kubeconfig(kubeconfig, build_kubeconfig(server, ca.pair.cert, pki["kube-router"]))
    subprocess.run(
        [str(bins["kubectl"]), f"--kubeconfig={state_root / 'kubeconfig'}", "apply", "-f", "-"],
        input=json.dumps(policy_engine_rbac()),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    offset = log.stat().st_size if log.exists() else 0
    launch(POLICY_ENGINE, policy_engine_args(bins["kube-router"], kubeconfig, node.name, free_port()))
    deadline = time.monotonic() + POLICY_ENGINE_TIMEOUT
    while not policy_engine_synced(log, offset):
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise NodeError(
                f"kube-router did not sync within {POLICY_ENGINE_TIMEOUT:.0f}s; its log ends:\n{tail}"
            )
        time.sleep(0.2)


def policy_engine_synced(log: Path, offset: int) -> bool:
    """Whether kube-router logged a finished full sync after ``offset`` of its log."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            return KUBE_ROUTER_SYNCED.encode() in f.read()
    except FileNotFoundError:
        return False


def advertise_gpus(kubectl: Path, kubeconfig: Path, node: NodeConfig) -> None:
    """The extended resource, as a device plugin (or an admin) would advertise it."""
    patch = [
        {"op": "add", "path": f"/status/capacity/{GPU_RESOURCE.replace('/', '~1')}", "value": str(node.gpus)}
    ]
    subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "patch",
            "node",
            node.name,
            "--subresource=status",
            "--type=json",
            f"-p={json.dumps(patch)}",
        ],
        check=True,
        capture_output=True,
    )


def drain(
    state_root: Path, records: list[processes.ProcessRecord], kubectl: Path | None, kubeconfig: Path
) -> None:
    """While the API server runs: stop recreating pods, delete them all, and wait until the
    kubelet has stopped their containers and sandboxes (which tears their networks down)."""
    by_name = {r.name: r for r in records}
    processes.stop([by_name[n] for n in ("kube-controller-manager", "kube-scheduler") if n in by_name])
    ctd = paths(state_root)
    kubelet = by_name.get("kubelet")
    if kubectl is not None and kubelet is not None and processes.alive(kubelet):
        subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={kubeconfig}",
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--wait=false",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _running_tasks(ctd):
            time.sleep(0.5)
    processes.stop([by_name[n] for n in ("kubelet", "kube-proxy") if n in by_name])
    if "containerd" in by_name and processes.alive(by_name["containerd"]):
        containerd.kill_all_tasks(ctd)
        processes.stop([by_name["containerd"]])


def cleanup(state_root: Path) -> list[str]:
    """Remove what the node's processes leave behind; returns what could not be removed."""
    problems = remove_kube_chains()
    problems += remove_kube_router_ipsets()  # after the chains: an ipset in use cannot go
    for mount in mounts_under(state_root, Path("/proc/self/mountinfo").read_text()):
        if subprocess.run(["umount", "-l", mount], capture_output=True, check=False).returncode != 0:
            problems.append(f"umount {mount}")
    remove_unheld_netns()
    if Path(f"/sys/class/net/{NETWORK.bridge}").exists():
        _ip("link", "delete", NETWORK.bridge)
    for hierarchy in CGROUP_ROOT.glob("*/kubepods"):
        # Children before parents: a cgroup directory goes only once it is empty.
        for directory in [*sorted(hierarchy.rglob("*"), key=lambda p: -len(p.parts)), hierarchy]:
            if directory.is_dir():
                try:
                    directory.rmdir()
                except OSError as exc:
                    problems.append(f"rmdir {directory}: {exc.strerror}")
    return problems


def remove_kube_chains() -> list[str]:
    """The kubelet's and kube-proxy's iptables chains (KUBE-*), in every table and backend
    they touch, with the rules that jump to them from the built-in chains."""
    problems = []
    for tool in ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle", "raw"):
            listed = subprocess.run(
                [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            )
            for command in kube_chain_removal(listed.stdout):
                proc = subprocess.run([tool, "-w", "-t", table, *command], capture_output=True, text=True)
                if proc.returncode != 0:
                    problems.append(f"{tool} -t {table} {' '.join(command)}: {proc.stderr.strip()}")
    return problems


def remove_kube_router_ipsets() -> list[str]:
    problems = []
    for name in kube_router_ipsets(_ipset_names()):
        proc = subprocess.run(["ipset", "destroy", name], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            problems.append(f"ipset destroy {name}: {proc.stderr.strip()}")
    return problems


def kube_router_ipsets(names: str) -> list[str]:
    """From `ipset list -n` output: the sets kube-router's policy controller made."""
    return [name for name in names.split() if KUBE_ROUTER_IPSET.fullmatch(name)]


def _ipset_names() -> str:
    if shutil.which("ipset") is None:
        return ""
    return subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False).stdout


def kube_chain_removal(rules: str) -> list[list[str]]:
    """From `iptables -S` output: delete the jumps into KUBE-* chains, flush them, drop them."""
    jumps, chains = [], []
    for line in rules.splitlines():
        words = shlex.split(line)
        if len(words) >= 2 and words[0] == "-N" and words[1].startswith("KUBE-"):
            chains.append(words[1])
        elif (
            len(words) >= 2
            and words[0] == "-A"
            and not words[1].startswith("KUBE-")
            and any(a == "-j" and b.startswith("KUBE-") for a, b in itertools.pairwise(words))
        ):
            jumps.append(["-D", *words[1:]])
    return [*jumps, *(["-F", c] for c in chains), *(["-X", c] for c in chains)]


def leftovers(state_root: Path) -> list[str]:
    """What of the kubelet node is still on the machine (empty after a clean `down`)."""
    left = [f"mount {m}" for m in mounts_under(state_root, Path("/proc/self/mountinfo").read_text())]
    left += [f"netns {p.name}" for p in leftover_netns(NETNS_DIR, held_netns())]
    if Path(f"/sys/class/net/{NETWORK.bridge}").exists():
        left.append(f"bridge {NETWORK.bridge}")
    left += [f"cgroup {p}" for p in CGROUP_ROOT.glob("*/kubepods")]
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            saved = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
            left += [f"{tool}: {line}" for line in saved.splitlines() if "KUBE-" in line]
    left += [f"ipset {name}" for name in kube_router_ipsets(_ipset_names())]
    left += [f"process {p.name}" for p in Path("/proc").glob("[0-9]*") if _is_node_process_of(p, state_root)]
    return left


def _is_node_process_of(proc: Path, state_root: Path) -> bool:
    """A containerd shim still running for this cluster's containerd, or its kube-router."""
    try:
        argv = (proc / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    line = b" ".join(argv)
    return bool(argv) and (
        (argv[0].endswith(b"containerd-shim-runc-v2") and str(paths(state_root).socket).encode() in line)
        or (argv[0].endswith(b"kube-router") and str(state_root.resolve()).encode() in line)
    )


def mounts_under(root: Path, mountinfo: str) -> list[str]:
    """Mount points at or below ``root``, deepest first (the order to unmount them)."""
    prefix = str(root.resolve())
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def leftover_netns(netns_dir: Path, held: set[int]) -> list[Path]:
    """The pod network namespaces containerd made and no process is in: its pods are gone
    (another node's, running, are held by their pause processes). Also a node's whose
    processes were killed without a `down` (a session of work ended: CI found 11 of them)."""
    if not netns_dir.is_dir():
        return []
    return [p for p in netns_dir.glob("cni-*") if p.stat().st_ino not in held]


def held_netns() -> set[int]:
    """The network namespaces (nsfs inodes) that some process is in."""
    held = set()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            held.add((proc / "ns" / "net").stat().st_ino)
    return held


def remove_unheld_netns() -> None:
    for netns in leftover_netns(NETNS_DIR, held_netns()):
        subprocess.run(["umount", str(netns)], capture_output=True, check=False)
        netns.unlink(missing_ok=True)


def _running_tasks(ctd: containerd.ContainerdPaths) -> bool:
    try:
        return any(
            line.split()[-1] == "RUNNING"
            for line in containerd.ctr(ctd, "tasks", "list").splitlines()[1:]
            if line.split()
        )
    except (RuntimeError, subprocess.SubprocessError):
        return False


def _await_socket(socket: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if time.monotonic() > deadline:
            raise NodeError(f"containerd did not open {socket} within {timeout:.0f}s")
        time.sleep(0.1)


def _ip(*args: str) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NodeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout
