"""The local cluster's ports come from below the kernel's ephemeral range, free when chosen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubesessions.localcluster.cluster import free_port

pytestmark = pytest.mark.unit


def test_ports_are_below_the_ephemeral_range_and_free() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < floor
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if it were taken
