"""What the fault suite checks in the cluster after each fault: every Session in a phase that
matches its worker, the sessions a fault killed ended as ``Failed``/``WorkerLost`` with no state
saved, no worker Pod, Service or Secret left without a live Session, and no saved state in the
state store but a suspended Session's (``Suspending``, ``Suspended`` or ``Resuming``, the same
uid). Plus the few blocking API calls the suite makes (JSON, with the admin kubeconfig)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import config
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api.models import FINISHED_PHASES
from kubesessions.api.names import (
    API_VERSION,
    JSON,
    MANAGED_BY,
    MANAGER,
    SESSION_LABEL,
    STATE_PREFIX,
    state_key,
)
from kubesessions.kube import kubeapi
from kubesessions.statestore import StoreError
from kubesessions.statestore.store import StateStore

LIVE_PHASES = ("Pending", "Starting")
# The phases in which a Session's saved state may be in the store: being written (the worker's
# upload may land before the operator records it), kept, or being handed back.
ASLEEP_PHASES = ("Suspending", "Suspended", "Resuming")
T = TypeVar("T")


@dataclass
class Expect:
    """What a fault must leave behind, beyond the general rules, and notes for the figures."""

    worker_lost: set[str] = field(default_factory=set)  # sessions that must end Failed/WorkerLost
    kept: set[str] = field(default_factory=set)  # sessions that must come through it Ready, held
    notes: dict[str, object] = field(default_factory=dict)


@dataclass
class Result:
    wrong_phase: list[str] = field(default_factory=list)  # "name: why"
    orphans: list[str] = field(default_factory=list)  # "kind/name"
    orphaned_states: list[str] = field(default_factory=list)  # store keys no suspended Session owns
    abandoned: int = 0  # Ready sessions no load thread holds (a start whose answer was lost)
    api_error: str = ""

    @property
    def settled(self) -> bool:
        return not (self.wrong_phase or self.orphans or self.orphaned_states or self.api_error)

    def figures(self) -> dict[str, object]:
        return {
            "wrong_phase": len(self.wrong_phase),
            "orphans": len(self.orphans),
            "abandoned_sessions": self.abandoned,
            "wrong_phase_detail": self.wrong_phase[:5],
            "orphan_detail": self.orphans[:5],
            "orphaned_states": len(self.orphaned_states),
            "orphaned_state_detail": self.orphaned_states[:5],
            **({"api_error": self.api_error} if self.api_error else {}),
        }


class KubeError(OSError):
    """An API call that failed: an error status (``status``), or no answer (``status`` 0), as
    while the API server restarts."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Kube:
    """Blocking JSON calls to the API server for the suite's own thread: the local cluster's
    client (kubernetes_asyncio), run on an event loop of a thread of its own."""

    def __init__(self, kubeconfig: Path) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="chaos-kube", daemon=True).start()
        self.api: kubeapi.Kube = self.run(self._connect(kubeconfig))

    @staticmethod
    async def _connect(kubeconfig: Path) -> kubeapi.Kube:
        return kubeapi.Kube(await config.new_client_from_config(config_file=str(kubeconfig)))

    def run(self, call: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(call, self.loop).result(timeout=15)

    def call(self, method: str, path: str, body: Any = None) -> JSON:
        try:
            return self.run(self.api.request(method, path, body=body, timeout=10))
        except ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc

    def items(self, path: str, selector: str = "") -> list[JSON]:
        found: list[JSON] = self.call("GET", path + (f"?labelSelector={selector}" if selector else ""))[
            "items"
        ]
        return found

    def close(self) -> None:
        self.run(self.api.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


def check(kube: Kube, namespace: str, held: set[str], expect: Expect, store: StateStore | None) -> Result:
    """``store``: the cluster's state store (None: it has none, and no state is checked)."""
    result = Result()
    try:
        sessions, pods, others = _read(kube, namespace)
        states = kube.run(store.keys(f"{STATE_PREFIX}{namespace}/")) if store is not None else []
    except (OSError, StoreError) as exc:  # urllib's errors included: the API server may be restarting
        result.api_error = f"{type(exc).__name__}: {exc}"[:300]
        return result
    for name, session in sessions.items():
        status = session.get("status") or {}
        phase, reason = status.get("phase") or "Pending", status.get("reason")
        if name in expect.worker_lost and (phase, reason) != ("Failed", "WorkerLost"):
            result.wrong_phase.append(f"{name}: {phase}/{reason}, its worker was killed")
        elif name in expect.worker_lost and status.get("suspension"):
            result.wrong_phase.append(f"{name}: its worker was killed, yet a saved state is recorded")
        elif name in expect.kept and (phase != "Ready" or name not in held):
            result.wrong_phase.append(
                f"{name}: {phase}/{reason}, {'' if name in held else 'dropped, '}must go on"
            )
        elif phase == "Ready":
            why = _not_serving(pods.get(name), status)
            if why:
                result.wrong_phase.append(f"{name}: Ready, but {why}")
            elif name not in held:
                result.abandoned += 1
        elif phase in LIVE_PHASES and name in held:
            result.wrong_phase.append(f"{name}: still {phase}")
    # Ended and its tombstone gone (the load then made a new one): it did not go on either.
    result.wrong_phase += [f"{name}: gone, must go on" for name in sorted(expect.kept - sessions.keys())]
    live = {n for n, s in sessions.items() if (s.get("status") or {}).get("phase") not in FINISHED_PHASES}
    result.orphans = [f"{kind}/{name}" for kind, name, owner in others if owner not in live]
    asleep = {
        state_key(namespace, name, s["metadata"]["uid"])
        for name, s in sessions.items()
        if (s.get("status") or {}).get("phase") in ASLEEP_PHASES
    }
    result.orphaned_states = [key for key in states if key not in asleep]
    return result


def _not_serving(pod: JSON | None, status: JSON) -> str:
    if pod is None:
        return "its pod is gone"
    if pod["metadata"].get("deletionTimestamp"):
        return "its pod is being deleted"
    if pod["status"].get("phase") != "Running":
        return f"its pod is {pod['status'].get('phase')}"
    if pod["status"].get("podIP") != status.get("podIP"):
        return "its pod has another IP"
    return ""


def _read(kube: Kube, namespace: str) -> tuple[dict[str, JSON], dict[str, JSON], list[tuple[str, str, str]]]:
    selector, core = f"{MANAGED_BY}%3D{MANAGER}", f"/api/v1/namespaces/{namespace}"
    sessions = {
        s["metadata"]["name"]: s for s in kube.items(f"/apis/{API_VERSION}/namespaces/{namespace}/sessions")
    }
    children = [
        (kind, obj)
        for kind in ("Pod", "Service", "Secret")
        for obj in kube.items(f"{core}/{kind.lower()}s", selector)
    ]
    pods = {obj["metadata"]["name"]: obj for kind, obj in children if kind == "Pod"}
    others = [
        (kind, obj["metadata"]["name"], (obj["metadata"].get("labels") or {}).get(SESSION_LABEL, ""))
        for kind, obj in children
    ]
    return sessions, pods, others
