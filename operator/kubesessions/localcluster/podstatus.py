"""A pod's status as a kubelet would report it, from what its containers did (pure), and the
termination message a container left."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from kubesessions.api.names import JSON
from kubesessions.common.timefmt import rfc3339

TERMINATION_MESSAGE_LIMIT = 4096  # bytes, as a kubelet keeps


@dataclass
class ContainerRecord:
    """What happened to one container so far."""

    name: str
    image: str
    init: bool = False
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    signal: int = 0
    pid: int = 0
    ready: bool = False
    started: bool = False
    restart_count: int = 0
    last_state: JSON = field(default_factory=dict)

    def terminated(self) -> JSON:
        term: JSON = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at or None,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.signal:
            term["signal"] = self.signal
        if self.message:
            term["message"] = self.message
        return term

    @property
    def container_id(self) -> str:
        return f"process://{self.pid}" if self.pid else ""

    def to_status(self) -> JSON:
        if self.state == "running":
            state: JSON = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated()}
        else:
            waiting: JSON = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        status: JSON = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready and self.state == "running",
            "started": self.started and self.state == "running",
            "restartCount": self.restart_count,
            "state": state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def will_restart(policy: str, record: ContainerRecord) -> bool:
    if record.state != "terminated":
        return False
    return policy == "Always" or (policy == "OnFailure" and record.exit_code != 0)


def pod_phase(policy: str, inits: list[ContainerRecord], mains: list[ContainerRecord]) -> str:
    """The kubelet's phase rules, for containers that have all been seen at least once."""
    if any(r.state == "terminated" and r.exit_code != 0 and not will_restart(policy, r) for r in inits):
        return "Failed"
    if any(r.state != "terminated" or r.exit_code != 0 for r in inits):
        return "Pending"
    if any(r.state == "running" for r in mains):
        return "Running"
    if any(r.state == "waiting" and not r.restart_count and not r.started_at for r in mains):
        return "Pending"
    if any(will_restart(policy, r) or r.state == "waiting" for r in mains):
        return "Running"
    return "Succeeded" if all(r.exit_code == 0 for r in mains) else "Failed"


def _condition(kind: str, ok: bool, previous: dict[str, JSON], reason: str = "") -> JSON:
    status = "True" if ok else "False"
    old = previous.get(kind)
    cond: JSON = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": old["lastTransitionTime"]
        if old and old.get("status") == status and old.get("lastTransitionTime")
        else rfc3339(precision="seconds"),
    }
    if not ok and reason:
        cond["reason"] = reason
    return cond


def pod_status(
    pod: JSON,
    inits: list[ContainerRecord],
    mains: list[ContainerRecord],
    *,
    pod_ip: str,
    host_ip: str,
    start_time: str,
    failure: tuple[str, str] | None = None,
) -> JSON:
    """The full status to send; ``failure`` (reason, message) fails the whole pod."""
    policy = pod["spec"].get("restartPolicy", "Always")
    previous = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
    phase = "Failed" if failure else pod_phase(policy, inits, mains)
    initialized = all(r.state == "terminated" and r.exit_code == 0 for r in inits)
    containers_ready = bool(mains) and all(r.ready and r.state == "running" for r in mains)
    status: JSON = {
        "phase": phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", bool(pod_ip), previous),
            _condition("Initialized", initialized, previous, "ContainersNotInitialized"),
            _condition("ContainersReady", containers_ready, previous, "ContainersNotReady"),
            _condition("Ready", containers_ready, previous, "ContainersNotReady"),
        ],
        "initContainerStatuses": [r.to_status() for r in inits] or None,
        "containerStatuses": [r.to_status() for r in mains],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if failure:
        status["reason"], status["message"] = failure
    return status


def termination_message(cspec: JSON, term_file: Path, log_path: Path, exit_code: int) -> str:
    try:
        message = term_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    except OSError:
        message = ""
    if not message and exit_code != 0 and cspec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        with contextlib.suppress(OSError):
            tail = log_path.read_bytes()[-2048:].decode(errors="replace")
            message = "\n".join(tail.splitlines()[-80:])
    return message


def same_status(new: JSON, old: JSON) -> bool:
    """Whether ``old`` already says all that ``new`` says (a status patch would change nothing)."""
    return all(old.get(k) == v for k, v in new.items() if v is not None)
