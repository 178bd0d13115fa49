"""Free ports for the cluster's components."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from kubesessions.localcluster.state import ClusterError

# Kubernetes' NodePort range (its default, given to the API server and kube-router): on the
# kubelet node, kube-proxy
# answers these ports on the node's address for NodePort Services, and kube-router lets every
# pod reach them whatever its NetworkPolicy says (an API server on 30031 was open to workers).
NODE_PORT_RANGE = range(30000, 32768)
NODE_PORT_FLAG = f"--service-node-port-range={NODE_PORT_RANGE.start}-{NODE_PORT_RANGE.stop - 1}"


# Every port this process has handed out: `up` draws a dozen before any is bound, and a port
# drawn twice failed the second component with 'address already in use'.
_HANDED: set[int] = set()


def free_port() -> int:
    """A port free now, from below the kernel's ephemeral range (a port the kernel hands out
    (bind to 0) can be taken by any outgoing connection before its server binds it, and one
    of the cluster's components then fails with 'address already in use') and outside the
    NodePort range, never one this process handed out before."""
    low = _ephemeral_floor()
    candidates = [p for p in range(max(1024, low - 12000), low) if p not in NODE_PORT_RANGE]
    for _ in range(200):
        port = secrets.choice(candidates)
        if port in _HANDED:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED.add(port)
            return port
    raise ClusterError("no free port found below the ephemeral range")


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
