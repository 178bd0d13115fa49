"""The kubelet node's pure parts: runtime and network config, image archives, cleanup order."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from kubesessions.localcluster import containerd, images, kubeletnode
from kubesessions.localcluster.nodeconfig import NodeConfig

pytestmark = pytest.mark.unit


def test_containerd_config_keeps_everything_in_the_state_dir(tmp_path: Path) -> None:
    paths = containerd.ContainerdPaths(tmp_path / "containerd")
    toml = containerd.config_toml(paths, "localhost/pause:1")
    assert f'root = "{tmp_path}/containerd/root"' in toml
    assert f'address = "{tmp_path}/containerd/containerd.sock"' in toml
    assert f'conf_dir = "{tmp_path}/containerd/cni/net.d"' in toml
    assert 'bin_dir = "/usr/lib/cni"' in toml


def test_containerd_config_sets_the_traps_this_vm_needs(tmp_path: Path) -> None:
    toml = containerd.config_toml(containerd.ContainerdPaths(tmp_path), "localhost/pause:1")
    # No CAP_SYS_RESOURCE here: without this every sandbox fails in runc.
    assert "restrict_oom_score_adj = true" in toml
    # The default pause image is on a registry this machine cannot reach.
    assert 'sandbox_image = "localhost/pause:1"' in toml
    assert "SystemdCgroup = false" in toml


def test_pod_network_has_no_way_off_the_machine(tmp_path: Path) -> None:
    net = containerd.PodNetwork()
    conf = containerd.cni_conflist(net, tmp_path)
    (bridge,) = conf["plugins"]  # type: ignore[misc]
    assert bridge["ipMasq"] is False
    assert bridge["isDefaultGateway"] is False
    routes = bridge["ipam"]["routes"]
    assert routes == [{"dst": net.service_cidr, "gw": net.gateway}]
    assert all(r["dst"] != "0.0.0.0/0" for r in routes)
    assert bridge["ipam"]["dataDir"] == str(tmp_path)


def test_kubelet_config_matches_this_machine(tmp_path: Path) -> None:
    node = NodeConfig(kind="kubelet", gpu_taint=True, pods=40)
    config = kubeletnode.kubelet_config(
        node, tmp_path, tmp_path / "ca.crt", {"kubelet": 1, "kubelet-healthz": 2}
    )
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failSwapOn"] is False
    assert config["containerRuntimeEndpoint"] == f"unix://{tmp_path}/containerd/containerd.sock"
    assert config["address"] == kubeletnode.NETWORK.gateway  # a loopback node IP is refused
    assert config["authentication"]["anonymous"] == {"enabled": False}  # type: ignore[index]
    assert config["registerWithTaints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    ]
    assert config["maxPods"] == 40
    # Not a share of the disk: 2% of this VM's was 5.4 GB, more than a busy machine had free.
    assert config["evictionHard"]["nodefs.available"] == "1Gi"  # type: ignore[index]


def test_apiserver_reaches_the_kubelet_by_ip_and_pods_reach_the_apiserver() -> None:
    pair = kubeletnode.Pair(Path("c.crt"), Path("c.key"))
    args = kubeletnode.apiserver_args({"kubelet-client": pair})
    assert "--kubelet-preferred-address-types=InternalIP" in args
    assert f"--advertise-address={kubeletnode.NETWORK.gateway}" in args
    assert "--kubelet-client-certificate=c.crt" in args


def test_preflight_refuses_without_root() -> None:
    with pytest.raises(kubeletnode.NodeError, match="needs root"):
        kubeletnode.preflight(euid=1000)


def test_mounts_under_lists_the_state_dirs_deepest_first() -> None:
    mountinfo = "\n".join(
        [
            "22 1 0:21 / /proc rw - proc proc rw",
            "90 22 0:50 / /state/kubelet/root rw - ext4 /dev/vda rw",
            "91 90 0:51 / /state/kubelet/root/pods/a/volumes/token rw - tmpfs tmpfs rw",
            "92 22 0:52 / /state/containerd/state/x/rootfs rw - overlay overlay rw",
            "93 22 0:53 / /statefile rw - tmpfs tmpfs rw",
            "94 22 0:54 / /state/with\\040space rw - tmpfs tmpfs rw",
        ]
    )
    assert kubeletnode.mounts_under(Path("/state"), mountinfo) == [
        "/state/kubelet/root/pods/a/volumes/token",
        "/state/containerd/state/x/rootfs",
        "/state/kubelet/root",
        "/state/with space",
    ]


def test_docker_archive_is_what_containerd_imports() -> None:
    data = images.docker_archive("localhost/pause:1", {"pause": (b"\x7fELF", 0o755)}, ["/pause"])
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        (entry,) = manifest
        assert entry["RepoTags"] == ["localhost/pause:1"]
        config = json.load(archive.extractfile(entry["Config"]))  # type: ignore[arg-type]
        assert config["config"]["Entrypoint"] == ["/pause"]
        layer_bytes = archive.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer_bytes).hexdigest()}"]
    with tarfile.open(fileobj=io.BytesIO(layer_bytes)) as layer:
        member = layer.getmember("pause")
        assert member.mode == 0o755


def test_sources_digest_changes_with_the_sources_but_not_with_bytecode(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    before = images.sources_digest(tmp_path, ["pkg"])
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    assert images.sources_digest(tmp_path, ["pkg"]) == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert images.sources_digest(tmp_path, ["pkg"]) != before


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_up_with_the_kubelet_node_refuses_clearly_when_not_root() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)  # the unprivileged user must be able to look
        state = Path(tmp) / "state"
        proc = subprocess.run(
            [
                *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"),
                *(
                    sys.executable,
                    "-m",
                    "kubesessions.cli.commands",
                    "localcluster",
                    "up",
                    "--node",
                    "kubelet",
                ),
                *("--state-dir", str(state)),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        assert "the kubelet node needs root" in proc.stderr
        assert not state.exists()  # refused before writing anything


def test_kube_chain_removal_unhooks_then_flushes_then_deletes() -> None:
    rules = "\n".join(
        [
            "-P INPUT ACCEPT",
            "-N KUBE-FIREWALL",
            "-N KUBE-KUBELET-CANARY",
            "-N OTHER",
            "-A INPUT -j KUBE-FIREWALL",
            "-A INPUT -j OTHER",
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
            "-N KUBE-SERVICES",
            '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "x y" -j DROP',
        ]
    )
    assert kubeletnode.kube_chain_removal(rules) == [
        ["-D", "INPUT", "-j", "KUBE-FIREWALL"],
        ["-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
        ["-F", "KUBE-FIREWALL"],
        ["-F", "KUBE-KUBELET-CANARY"],
        ["-F", "KUBE-SERVICES"],
        ["-X", "KUBE-FIREWALL"],
        ["-X", "KUBE-KUBELET-CANARY"],
        ["-X", "KUBE-SERVICES"],
    ]


def test_the_kubelet_serves_a_certificate_the_api_server_trusts_for_its_ip(tmp_path: Path) -> None:
    # The API server checks the kubelet's serving certificate (--kubelet-certificate-authority):
    # a self-signed one, or one without the node's IP, fails `kubectl logs` and `exec` with
    # "x509: cannot validate certificate for 10.250.0.1 because it doesn't contain any IP SANs".
    import ipaddress

    from cryptography import x509

    from kubesessions.localcluster.certs import Authority

    ca = Authority(tmp_path / "pki")
    serving = kubeletnode.issue_certs(ca)["kubelet-serving"]
    config = kubeletnode.kubelet_config(
        NodeConfig(), tmp_path, ca.pair.cert, {"kubelet": 1, "kubelet-healthz": 2}, serving
    )
    assert (config["tlsCertFile"], config["tlsPrivateKeyFile"]) == (str(serving.cert), str(serving.key))
    cert = x509.load_pem_x509_certificate(serving.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address(kubeletnode.NETWORK.gateway) in sans.get_values_for_type(x509.IPAddress)
    assert cert.issuer == x509.load_pem_x509_certificate(ca.pair.cert.read_bytes()).subject


def test_kube_router_chains_are_unhooked_and_removed_like_kube_proxys() -> None:
    # As `iptables -S` lists them after kube-router's policy controller stopped (SIGTERM
    # leaves them): jumps from the built-in chains carry a comment with a rule id.
    rules = "\n".join(
        [
            "-P FORWARD ACCEPT",
            "-N KUBE-NWPLCY-DEFAULT",
            "-N KUBE-POD-FW-5GAXKDNVJXCSRQ2V",
            "-N KUBE-ROUTER-FORWARD",
            '-A FORWARD -m comment --comment "kube-router netpol - TEMCG2JMHZYE7H7T" -j KUBE-ROUTER-FORWARD',
            '-A KUBE-ROUTER-FORWARD -d 10.250.0.7/32 -m comment --comment "rule to jump" -j KUBE-POD-FW-5GAXKDNVJXCSRQ2V',
            "-A KUBE-POD-FW-5GAXKDNVJXCSRQ2V -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable",
        ]
    )
    assert kubeletnode.kube_chain_removal(rules) == [
        [
            "-D",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "kube-router netpol - TEMCG2JMHZYE7H7T",
            "-j",
            "KUBE-ROUTER-FORWARD",
        ],
        ["-F", "KUBE-NWPLCY-DEFAULT"],
        ["-F", "KUBE-POD-FW-5GAXKDNVJXCSRQ2V"],
        ["-F", "KUBE-ROUTER-FORWARD"],
        ["-X", "KUBE-NWPLCY-DEFAULT"],
        ["-X", "KUBE-POD-FW-5GAXKDNVJXCSRQ2V"],
        ["-X", "KUBE-ROUTER-FORWARD"],
    ]


def test_only_kube_routers_ipsets_are_removed() -> None:
    names = "\n".join(
        [
            "KUBE-SRC-3DAWPP4V3PNO2WT4",
            "KUBE-DST-NLCGQ4DJIT5L4IF4",
            "inet6:KUBE-SRC-3DAWPP4V3PNO2WT4",
            "TMP-OO3AGBYIPRDDDDJR",
            "KUBE-CLUSTER-IP",  # kube-proxy's (ipvs mode), not kube-router's
            "KUBE-SRC-short",
            "TMP-mine",
            "my-allowlist",
        ]
    )
    assert kubeletnode.kube_router_ipsets(names) == [
        "KUBE-SRC-3DAWPP4V3PNO2WT4",
        "KUBE-DST-NLCGQ4DJIT5L4IF4",
        "inet6:KUBE-SRC-3DAWPP4V3PNO2WT4",
        "TMP-OO3AGBYIPRDDDDJR",
    ]
    assert kubeletnode.kube_router_ipsets("") == []


def test_policy_engine_runs_only_kube_routers_policy_controller(tmp_path: Path) -> None:
    argv = kubeletnode.policy_engine_args(
        Path("/bin/kube-router"), tmp_path / "kr.kubeconfig", "node-1", 41234
    )
    assert argv[0] == "/bin/kube-router"
    flags = dict(a.removeprefix("--").split("=", 1) for a in argv[1:])
    assert flags["run-firewall"] == "true"
    assert flags["run-router"] == flags["run-service-proxy"] == "false"
    assert flags["kubeconfig"] == str(tmp_path / "kr.kubeconfig")
    assert flags["hostname-override"] == "node-1"
    assert flags["health-port"] == "41234"  # not its fixed default, 20244
    assert flags["service-cluster-ip-range"] == "10.96.0.0/16"  # the API server's
    assert flags["service-node-port-range"] == "30000-32767"  # what free_port() avoids


def test_policy_engine_may_only_read_what_its_informers_watch() -> None:
    role, binding = kubeletnode.policy_engine_rbac()["items"]  # type: ignore[misc]
    verbs = {(r["apiGroups"][0], res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]}
    assert verbs[("networking.k8s.io", "networkpolicies")] == {"get", "list", "watch"}
    assert verbs[("", "pods")] == verbs[("", "namespaces")] == {"get", "list", "watch"}
    writes = {key for key, v in verbs.items() if v - {"get", "list", "watch"}}
    assert writes == {("", "events")}
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": kubeletnode.POLICY_ENGINE_USER}
    ]


def test_policy_engine_counts_as_synced_only_after_the_offset(tmp_path: Path) -> None:
    log = tmp_path / "kube-router.log"
    assert not kubeletnode.policy_engine_synced(log, 0)  # no log yet
    log.write_text("I1207 network_policy_controller.go:170] sync iptables took 41ms\n")
    offset = log.stat().st_size
    assert kubeletnode.policy_engine_synced(log, 0)
    assert not kubeletnode.policy_engine_synced(log, offset)  # the previous run's sync
    with log.open("a") as f:
        f.write("I1207 Starting sync of iptables\nI1207 sync iptables took 55ms\n")
    assert kubeletnode.policy_engine_synced(log, offset)


def test_a_pod_netns_no_process_is_in_is_a_leftover_and_a_held_one_is_not(tmp_path: Path) -> None:
    """Not by age: a node killed without a `down` leaves its pods' namespaces, and another
    node's, running, are held by their pause processes."""
    (tmp_path / "cni-dead").touch()
    (tmp_path / "cni-held").touch()
    (tmp_path / "other").touch()
    held = {(tmp_path / "cni-held").stat().st_ino}
    assert kubeletnode.leftover_netns(tmp_path, held) == [tmp_path / "cni-dead"]
    assert kubeletnode.leftover_netns(tmp_path / "absent", held) == []


def test_held_netns_includes_this_process_s_own() -> None:
    assert Path("/proc/self/ns/net").stat().st_ino in kubeletnode.held_netns()
