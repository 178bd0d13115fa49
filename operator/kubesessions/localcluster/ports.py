"""Free ports for the cluster's components."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

from kubesessions.localcluster.state import ClusterError


def free_port() -> int:
    """A port free now, from below the kernel's ephemeral range: a port the kernel hands out
    (bind to 0) can be taken by any outgoing connection before its server binds it, and one
    of the cluster's components then fails with 'address already in use'."""
    low = _ephemeral_floor()
    for _ in range(200):
        port = secrets.choice(range(max(1024, low - 12000), low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise ClusterError("no free port found below the ephemeral range")


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
