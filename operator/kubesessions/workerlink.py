"""Talking to a Session's worker: its token, `/status`, keepalives passed on, close-if-idle,
and what an unreachable worker means. It says what it found; the controller acts on endings."""

from __future__ import annotations

import base64
import datetime
import logging
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from . import builders, idle
from .accounting import Accounting
from .kubeapi import Kube, core_path
from .models import Phase, SessionStatus
from .sessionstate import JSON, Key, OperatorSettings, Tracked
from .status import Verdict, as_json
from .statuswriter import StatusWriter, current_status
from .timefmt import parse_rfc3339, rfc3339

log = logging.getLogger("kubesessions.operator")

KEEPALIVE_ANNOTATION = "kubesessions.io/keepalive"
KEEPALIVE_SEEN = "kubesessions.io/keepalive-seen"


@dataclass(frozen=True)
class Look:
    """What a look at the worker found: when to look again, or that the session is over."""

    again_in: float | None = None
    end: Verdict | None = None


def _from_ms(ms: int) -> datetime.datetime:
    """Exact: no float round trip, so equal milliseconds give equal strings."""
    return datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC) + datetime.timedelta(
        milliseconds=ms % 1000
    )


class WorkerLink:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        writer: StatusWriter,
        writes: Counter[str],
        accounting: Accounting,
    ) -> None:
        self.kube = kube
        self.accounting = accounting
        self.settings = settings
        self.writer = writer
        self.writes = writes
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        await self.http.close()

    async def look(self, key: Key, body: JSON, pod: JSON, timeout: int, tracked: Tracked) -> Look:
        """Pass on a new keepalive, read `/status`, and close the worker if it is idle past
        ``timeout`` (the worker refuses if a call came in since)."""
        wait = tracked.retry_at - time.monotonic()
        if tracked.unreachable and wait > 0:
            # Backing off an unreachable worker: other events must not spend the tries faster.
            return Look(wait)
        try:
            keepalive = self._new_keepalive(body, pod, tracked)
            if keepalive is not None:
                await self._call("POST", key, pod, tracked, "/keepalive")
                tracked.keepalive = keepalive
                tracked.activity_written_at = 0.0  # record it (and that it was seen) without delay
            _, worker = await self._call("GET", key, pod, tracked, "/status")
        except (aiohttp.ClientError, TimeoutError, ApiException) as exc:
            return await self._unreachable(key, body, tracked, exc)
        self.accounting.observe(key, body, worker)
        if tracked.unreachable:
            tracked.unreachable = 0
            await self.writer.set_unreachable(key, body, None)
        wall_now = time.time()
        last = parse_rfc3339(worker.get("lastActivity"))
        last_ts = last.timestamp() if last else wall_now
        # Nobody can call a session before it is announced Ready, so its idle clock starts
        # there at the earliest: the expiresAt published with Ready is a promise.
        ready_at = parse_rfc3339(current_status(body).readyAt)
        if ready_at is not None:
            last_ts = max(last_ts, ready_at.timestamp())
        decision = idle.decide(
            wall_now, last_ts, timeout, bool(worker.get("inFlight") or worker.get("queued"))
        )
        if decision.expire:
            try:
                code, answer = await self._call("POST", key, pod, tracked, f"/close?ifIdleFor={timeout}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                return await self._unreachable(key, body, tracked, exc)
            if code == 409:
                return Look(float(answer.get("remainingSeconds") or idle.BUSY_LOOK_MIN) + idle.EPSILON)
            return Look(end=Verdict(Phase.EXPIRED, "IdleTimeout", f"no call for {timeout}s (idle timeout)"))
        await self._record_activity(key, body, pod, tracked, last_ts, timeout, worker)
        return Look(decision.look_again_in)

    async def token(self, key: Key, tracked: Tracked) -> str:
        if tracked.token is None:
            secret = await self.kube.get(core_path(key[0], "secrets", builders.token_secret_name(key[1])))
            tracked.token = base64.b64decode(secret["data"][builders.TOKEN_KEY]).decode()
        return tracked.token

    async def _call(self, method: str, key: Key, pod: JSON, tracked: Tracked, path: str) -> tuple[int, JSON]:
        """One call to the session's worker with its token; (status, JSON body)."""
        ip = pod.get("status", {}).get("podIP")
        url = f"http://{ip}:{builders.WORKER_PORT}{path}"
        headers = {"Authorization": f"Bearer {await self.token(key, tracked)}"}
        timeout = aiohttp.ClientTimeout(total=self.settings.worker_timeout)
        async with self.http.request(method, url, headers=headers, timeout=timeout) as resp:
            if resp.status >= 500 or resp.status in (401, 403, 404):
                resp.raise_for_status()
            body: JSON = await resp.json(content_type=None) if resp.content_length != 0 else {}
            return resp.status, body

    def _new_keepalive(self, body: JSON, pod: JSON, tracked: Tracked) -> str | None:
        """A ``kubesessions.io/keepalive`` value not yet passed on to the worker, if any."""
        value = (body["metadata"].get("annotations") or {}).get(KEEPALIVE_ANNOTATION)
        if value is None or value == tracked.keepalive:
            return None
        seen = (pod.get("metadata", {}).get("annotations") or {}).get(KEEPALIVE_SEEN)
        if tracked.keepalive is None and seen == value:
            # After a restart: the pod remembers which keepalive was already passed on.
            tracked.keepalive = value
            return None
        return str(value)

    async def _record_activity(
        self, key: Key, body: JSON, pod: JSON, tracked: Tracked, last_ts: float, timeout: int, worker: JSON
    ) -> None:
        """Annotate the pod and the status with the last activity, throttled per session."""
        last_ms = round(last_ts * 1000)
        last = rfc3339(_from_ms(last_ms))
        status = current_status(body)
        recorded = parse_rfc3339(status.lastActivityTime)
        calls = worker.get("calls") if isinstance(worker.get("calls"), int) else None
        if (
            recorded is not None
            and round(recorded.timestamp() * 1000) == last_ms
            and calls in (status.calls, None if status.calls is not None else 0)
        ):
            return
        if time.monotonic() - tracked.activity_written_at < idle.write_interval(timeout):
            return
        tracked.activity_written_at = time.monotonic()
        pod_annotations = {builders.LAST_ACTIVITY: last}
        if tracked.keepalive is not None:
            pod_annotations[KEEPALIVE_SEEN] = tracked.keepalive
        self.writes["patch pods"] += 1
        try:
            # The pod's own name: a claimed pool worker's is not the Session's.
            await self.kube.merge_patch(
                core_path(key[0], "pods", pod["metadata"]["name"]),
                {"metadata": {"annotations": pod_annotations}},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        activity = SessionStatus(
            lastActivityTime=last,
            idleSince=last,
            expiresAt=rfc3339(_from_ms(last_ms + timeout * 1000)),
            calls=calls,
        )
        await self.writer.patch(key, as_json(activity) | self.accounting.status_fields(key))

    async def last_reading(self, key: Key, body: JSON, pod: JSON, tracked: Tracked) -> None:
        """Read a closing session's worker once more, so its final GPU-seconds count the time
        since the last look. Best effort: a worker that does not answer keeps its last reading."""
        try:
            _, worker = await self._call("GET", key, pod, tracked, "/status")
        except (aiohttp.ClientError, TimeoutError, ApiException) as exc:
            log.info(
                "session %s/%s: no final reading of the worker: %s",
                *key,
                exc,
                extra={"session": key[1], "namespace": key[0]},
            )
            return
        self.accounting.observe(key, body, worker)

    async def _unreachable(self, key: Key, body: JSON, tracked: Tracked, exc: BaseException) -> Look:
        tracked.unreachable += 1
        error = f"{type(exc).__name__}: {exc}".strip()
        log.warning(
            "session %s/%s: worker unreachable (%d/%d): %s",
            key[0],
            key[1],
            tracked.unreachable,
            self.settings.unreachable_limit,
            error,
            extra={"session": key[1], "namespace": key[0]},
        )
        if tracked.unreachable >= self.settings.unreachable_limit:
            message = f"the worker did not answer {tracked.unreachable} times in a row: {error}"
            return Look(end=Verdict(Phase.FAILED, "WorkerLost", message))
        await self.writer.set_unreachable(key, body, error)
        backoff = idle.unreachable_backoff(tracked.unreachable)
        tracked.retry_at = time.monotonic() + backoff
        return Look(backoff)
