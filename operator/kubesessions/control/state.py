"""What the controller remembers of each Session between reconciles, and the key it files it under."""

from __future__ import annotations

from dataclasses import dataclass, field

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Tracked:
    """What the controller remembers about one Session between reconciles."""

    uid: str = ""
    # The Session's own children known to exist, by kind (secret, service, pod): their uids ("" if
    # not known), what a delete names as its precondition.
    children: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    keepalive: str | None = None
    activity_written_at: float = 0.0  # monotonic
    unreachable: int = 0
    retry_at: float = 0.0  # monotonic: no worker call before this while it is unreachable
    pod_created_at: float | None = None  # monotonic, when this operator created the pod
    # The uid of the worker the Session suspended from: gone or going, never its worker again
    # (the pod watch may show it a while longer).
    suspended_from: str | None = None
    # This operator has its worker's answer to the last `/suspend` it sent (False: it sent
    # none, or the worker said a suspend an earlier operator asked for is under way).
    suspend_answered: bool = False
