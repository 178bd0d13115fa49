"""The local cluster's ports come from below the kernel's ephemeral range and outside the
NodePort range, free when chosen."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubesessions.localcluster.cluster import free_port
from kubesessions.localcluster.ports import NODE_PORT_FLAG, NODE_PORT_RANGE

pytestmark = pytest.mark.unit


def test_ports_are_below_the_ephemeral_range_and_free() -> None:
    floor = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert 1024 <= port < floor
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if it were taken


def test_ports_stay_out_of_the_node_port_range() -> None:
    # About a quarter of the range below the ephemeral floor (32768 here) was NodePorts, where
    # kube-router lets any pod through to the node: 300 draws all missing it by chance is
    # 0.77**300, never.
    ports = [free_port() for _ in range(300)]
    assert not [p for p in ports if p in NODE_PORT_RANGE]
    assert NODE_PORT_FLAG == "--service-node-port-range=30000-32767"  # Kubernetes' default


def test_a_process_is_never_handed_the_same_port_twice() -> None:
    # `up` draws a dozen ports before any component binds one (the control plane's and the
    # state store's): two equal draws made the second component fail with 'address already in
    # use'. 500 draws from ~9,000 candidates repeat one by chance almost surely (birthday bound).
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
