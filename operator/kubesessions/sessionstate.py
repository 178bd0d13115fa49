"""What the controller's parts share: its settings and what it remembers of each Session."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .builders import PolicyPeers

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)


@dataclass
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    retention: float = 600.0  # seconds a finished Session stays as a tombstone
    termination_grace: int = 30
    workers: int = 32  # reconciles wait on the API, not the CPU
    worker_timeout: float = 2.0  # seconds for one /status call to a worker
    unreachable_limit: int = 5  # failed /status calls in a row before WorkerLost
    idle_grace: int = 60  # the worker exits by itself when idle past timeout + this
    orphan_sweep_interval: float = 300.0
    # Who may reach workers (a NetworkPolicy in each namespace with sessions); None: no policy.
    network_policy: PolicyPeers | None = None


@dataclass
class Tracked:
    """What the controller remembers about one Session between reconciles."""

    uid: str = ""
    children: set[str] = field(default_factory=set)  # kinds known to exist: secret, service, pod
    token: str | None = None
    keepalive: str | None = None
    activity_written_at: float = 0.0  # monotonic
    unreachable: int = 0
    retry_at: float = 0.0  # monotonic: no worker call before this while it is unreachable
    pod_created_at: float | None = None  # monotonic, when this operator created the pod
