"""The state directory one local cluster lives in, and what `up` records there.

Shared by the cluster (which writes it), the process node and its pod runners (which read
it): its own module so that none of them imports another for it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubesessions.localcluster import processes
from kubesessions.localcluster.nodeconfig import NodeConfig


class ClusterError(RuntimeError):
    """The cluster cannot be brought up, or is not in the state asked for."""


@dataclass
class ClusterState:
    """What `up` wrote to ``state.json``: how to reach the cluster and what to stop."""

    server: str
    ports: dict[str, int]
    processes: list[processes.ProcessRecord] = field(default_factory=list)
    node: NodeConfig = field(default_factory=NodeConfig)

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "ports": self.ports,
            "processes": [p.to_json() for p in self.processes],
            "node": asdict(self.node),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterState:
        return cls(
            server=data["server"],
            ports=dict(data["ports"]),
            processes=[processes.ProcessRecord.from_json(p) for p in data["processes"]],
            node=NodeConfig(**data["node"]),
        )


class StateDir:
    """The layout of one cluster's state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    pki = property(lambda self: self.root / "pki")
    logs = property(lambda self: self.root / "logs")
    etcd_data = property(lambda self: self.root / "etcd")
    node_dir = property(lambda self: self.root / "node")
    kubeconfig = property(lambda self: self.root / "kubeconfig")
    state_file = property(lambda self: self.root / "state.json")

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.kubeconfig"

    def load(self) -> ClusterState | None:
        try:
            return ClusterState.from_json(json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None

    def save(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_json(), indent=2))
        tmp.replace(self.state_file)


def default_state_dir() -> Path:
    return Path(os.environ.get("KUBESESSIONS_LOCALCLUSTER_DIR", ".localcluster"))


def leftover_pod_processes(node_dir: Path) -> list[processes.ProcessRecord]:
    """Every container process the node recorded (live or not) under ``node_dir``
    (``pods/<uid>/<container>.pid``, written by the pod runner while the process lives)."""
    records = []
    for pid_file in node_dir.glob("pods/*/*.pid"):
        with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
            records.append(processes.ProcessRecord.from_json(json.loads(pid_file.read_text())))
    return records
