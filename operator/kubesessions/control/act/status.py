"""Writing a Session's status (typed, only what changed) and the Events people read: the one
part that writes a Session's status. It returns the Session as written; the controller keeps
it in its cache."""

from __future__ import annotations

import logging

from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api.models import Condition, Phase, SessionStatus, StartedFrom
from kubesessions.api.names import API_VERSION, JSON
from kubesessions.common.timefmt import rfc3339
from kubesessions.control.accounting import Accounting
from kubesessions.control.decide.children import build_event
from kubesessions.control.decide.status import (
    Verdict,
    as_json,
    current_status,
    desired_status,
    finished,
    status_patch,
)
from kubesessions.control.state import Key
from kubesessions.kube.kubeapi import Kube, core_path, group_path
from kubesessions.kube.objects import cacheable

log = logging.getLogger("kubesessions.operator")


class StatusWriter:
    def __init__(self, kube: Kube, accounting: Accounting) -> None:
        self.kube = kube
        self.accounting = accounting

    async def write(
        self,
        key: Key,
        body: JSON,
        verdict: Verdict,
        pod: JSON | None,
        facts: SessionStatus | None = None,
    ) -> JSON | None:
        """The status for ``verdict``, written if it differs (the Session as written; None: no
        change); an Event on a transition."""
        current = current_status(body)
        desired = desired_status(
            current,
            verdict,
            pod=pod,
            generation=body["metadata"].get("generation", 1),
            now=rfc3339(),
            facts=facts,
        )
        patch = status_patch(current, desired)
        if not patch:
            return None
        written = await self.patch(key, patch)
        if current.phase != desired.phase or current.reason != desired.reason:
            log.info(
                "session %s/%s: %s (%s) %s",
                key[0],
                key[1],
                verdict.phase,
                verdict.reason,
                verdict.message,
                extra={"session": key[1], "namespace": key[0]},
            )
            if not (verdict.phase == Phase.READY and desired.startedFrom == StartedFrom.POOL):
                # A claim's Ready is in its status (startedFrom, claimedAt): 4 writes, not 5.
                await self._transition_event(body, current.phase, verdict)
            self.accounting.transition(body, current.phase, as_json(desired))
        return written

    async def patch(self, key: Key, fields: JSON) -> JSON:
        """A merge patch of these status fields; the Session as written."""
        path = group_path(API_VERSION, key[0], "sessions", key[1]) + "/status"
        return cacheable(await self.kube.merge_patch(path, {"status": fields}))

    async def set_unreachable(self, key: Key, body: JSON, error: str | None) -> JSON:
        """Condition WorkerUnreachable: True with the error, or False once it answers again."""
        conditions = [c for c in current_status(body).conditions if c.type != "WorkerUnreachable"]
        conditions.append(
            Condition(
                type="WorkerUnreachable",
                status="True" if error else "False",
                reason="StatusCallFailed" if error else "WorkerAnswers",
                message=error or "",
                lastTransitionTime=rfc3339(),
                observedGeneration=body["metadata"].get("generation", 1),
            )
        )
        return await self.patch(key, {"conditions": [c.model_dump(exclude_none=True) for c in conditions]})

    async def _transition_event(self, body: JSON, before: str | None, verdict: Verdict) -> None:
        """Events for transitions a person cares about only."""
        if verdict.phase in (Phase.READY, Phase.SUSPENDED, Phase.RESUMING) and before != verdict.phase:
            kind = "Normal"
        elif finished(verdict.phase):
            kind = "Warning" if verdict.phase == Phase.FAILED else "Normal"
        elif verdict.reason == "Unschedulable" or verdict.reason == "AppNotFound":
            kind = "Warning"
        else:
            return
        reason = verdict.reason if verdict.phase != Phase.READY else "Ready"
        if verdict.phase in (Phase.SUSPENDED, Phase.RESUMING):
            reason = verdict.phase.value  # the phase says what happened; the message, why and how
        await self.event(body, kind, reason, verdict.message)

    async def event(self, body: JSON, kind: str, reason: str, message: str) -> None:
        """An Event on the Session (best effort: a failure is logged)."""
        meta = body["metadata"]
        event = build_event("Session", meta, kind, reason, message)
        try:
            await self.kube.create(core_path(meta["namespace"], "events"), event)
        except ApiException as exc:
            log.warning(
                "could not post event for %s: %s", meta["name"], exc.reason, extra={"session": meta["name"]}
            )
