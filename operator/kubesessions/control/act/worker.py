"""Talking to a worker, the one part that does: a Session's token, `/status`, keepalives passed
on, close-if-idle, suspend and resume (`/suspend`, `/resume`, with presigned URLs of the state
store), a pool worker's hand-over (`/claim`) and the looks that keep an unclaimed one, and what
an unreachable worker means.
It writes nothing to the API: it says what it found (:class:`Look`), and the controller has
the status and the pod written."""

from __future__ import annotations

import base64
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api import names
from kubesessions.api.models import Phase, SessionStatus
from kubesessions.api.names import JSON, KEEPALIVE_ANNOTATION, KEEPALIVE_SEEN
from kubesessions.common.timefmt import parse_rfc3339, rfc3339
from kubesessions.control.accounting import Accounting
from kubesessions.control.decide import children, idle, suspend
from kubesessions.control.decide.status import Verdict, as_json, current_status
from kubesessions.control.settings import OperatorSettings
from kubesessions.control.state import Key, Tracked
from kubesessions.kube.kubeapi import Kube, core_path

log = logging.getLogger("kubesessions.operator")


class ClaimFailed(RuntimeError):
    """A claimed worker did not take its session (the reconcile is retried)."""


@dataclass(frozen=True)
class Activity:
    """The worker's last activity, to be recorded: on its pod (the idle annotation) and in the
    Session's status."""

    pod_annotations: dict[str, str]
    status: JSON


@dataclass(frozen=True)
class Look:
    """What a look at the worker found: when to look again, or that the session is over; what
    to record (activity), and whether the worker's reachability changed (``unreachable``: the
    error; ``answers_again``: it answers after failing)."""

    again_in: float | None = None
    end: Verdict | None = None
    activity: Activity | None = None
    unreachable: str | None = None
    answers_again: bool = False
    suspend: bool = False  # idle past its timeout, and it can suspend: suspend it (not end it)
    idle: bool = False  # it answered, with no call running or queued


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
        accounting: Accounting,
    ) -> None:
        self.kube = kube
        self.accounting = accounting
        self.settings = settings
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        # Whether each App's app can suspend, as its workers' `/status` last said (by App key),
        # and who hears of a change (the pools' upkeep, which writes the App's condition).
        self.suspendable: dict[Key, bool] = {}
        self.on_suspendable: Callable[[Key], None] = lambda _: None

    async def close(self) -> None:
        await self.http.close()

    async def look(
        self,
        key: Key,
        body: JSON,
        pod: JSON,
        timeout: int,
        tracked: Tracked,
        no_suspend: str | None = suspend.OFF,
    ) -> Look:
        """Pass on a new keepalive, read `/status`, and close the worker if it is idle past
        ``timeout`` (the worker refuses if a call came in since). ``no_suspend``: why it may
        not suspend (None: it may, if the worker says its app can: then the look says so)."""
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
        self.accounting.observe(key, body, worker, pod["metadata"]["name"])
        if app := (body.get("spec") or {}).get("app"):
            self._saw_suspendable((key[0], app), worker)
        answers_again = tracked.unreachable > 0
        tracked.unreachable = 0
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
            if no_suspend is None and worker.get("suspendable") is True:
                return Look(suspend=True, answers_again=answers_again)
            why_not = no_suspend or suspend.NO_METHODS
            try:
                code, answer = await self._call("POST", key, pod, tracked, f"/close?ifIdleFor={timeout}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                return await self._unreachable(key, body, tracked, exc)
            if code == 409:
                again = float(answer.get("remainingSeconds") or idle.BUSY_LOOK_MIN) + idle.EPSILON
                return Look(again, answers_again=answers_again)
            if why_not == suspend.OFF:
                return Look(
                    end=Verdict(Phase.EXPIRED, "IdleTimeout", f"no call for {timeout}s (idle timeout)")
                )
            return Look(end=suspend.idle_end(why_not, timeout))
        activity = self._activity(key, body, tracked, last_ts, timeout, worker)
        return Look(
            decision.look_again_in,
            activity=activity,
            answers_again=answers_again,
            idle=not (worker.get("inFlight") or worker.get("queued")),
        )

    async def token(self, key: Key, tracked: Tracked) -> str:
        if tracked.token is None:
            secret = await self.kube.get(core_path(key[0], "secrets", children.token_secret_name(key[1])))
            tracked.token = base64.b64decode(secret["data"][names.TOKEN_KEY]).decode()
        return tracked.token

    async def suspend(
        self, key: Key, pod: JSON, tracked: Tracked, url: str, max_bytes: int
    ) -> tuple[int, JSON]:
        """`POST /suspend`: the worker saves its app's state to ``url`` (a presigned PUT of
        the state store) and then exits; (status, body) whatever the status."""
        return await self._post(key, pod, tracked, "/suspend", {"url": url, "max_bytes": max_bytes})

    async def resume(
        self, key: Key, pod: JSON, tracked: Tracked, url: str, sha256: str, size: int
    ) -> tuple[int, JSON]:
        """`POST /resume`: the worker fetches the state from ``url`` (a presigned GET), checks
        its size and sha256 and hands it to its app's resume; (status, body) whatever the status."""
        payload = {"url": url, "sha256": sha256, "bytes": size}
        return await self._post(key, pod, tracked, "/resume", payload)

    async def _post(
        self, key: Key, pod: JSON, tracked: Tracked, path: str, payload: JSON
    ) -> tuple[int, JSON]:
        # The app's own suspend or resume and the transfer may take as long as a call may.
        url = f"http://{pod.get('status', {}).get('podIP')}:{names.WORKER_PORT}{path}"
        headers = {"Authorization": f"Bearer {await self.token(key, tracked)}"}
        limit = aiohttp.ClientTimeout(total=self.settings.suspend_timeout)
        async with self.http.post(url, json=payload, headers=headers, timeout=limit) as resp:
            try:
                answer = await resp.json(content_type=None)
            except ValueError:
                answer = {"detail": (await resp.text())[:500]}
            return resp.status, answer if isinstance(answer, dict) else {}

    async def _call(self, method: str, key: Key, pod: JSON, tracked: Tracked, path: str) -> tuple[int, JSON]:
        """One call to the session's worker with its token; (status, JSON body)."""
        ip = pod.get("status", {}).get("podIP")
        url = f"http://{ip}:{names.WORKER_PORT}{path}"
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

    def _activity(
        self, key: Key, body: JSON, tracked: Tracked, last_ts: float, timeout: int, worker: JSON
    ) -> Activity | None:
        """The last activity for the pod and the status, throttled per session (None: nothing
        new to record, or recorded too recently)."""
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
            return None
        if time.monotonic() - tracked.activity_written_at < idle.write_interval(timeout):
            return None
        tracked.activity_written_at = time.monotonic()
        pod_annotations = {names.LAST_ACTIVITY: last}
        if tracked.keepalive is not None:
            pod_annotations[KEEPALIVE_SEEN] = tracked.keepalive
        activity = SessionStatus(
            lastActivityTime=last,
            idleSince=last,
            expiresAt=rfc3339(_from_ms(last_ms + timeout * 1000)),
            calls=calls,
        )
        return Activity(pod_annotations, as_json(activity) | self.accounting.status_fields(key))

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
        self.accounting.observe(key, body, worker, pod["metadata"]["name"])

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
        backoff = idle.unreachable_backoff(tracked.unreachable)
        tracked.retry_at = time.monotonic() + backoff
        return Look(backoff, unreachable=error)

    async def look_at_pool_worker(self, app: Key, pod: JSON, token: str, gpus: int) -> bool:
        """Keep an unclaimed pool worker of App ``app`` (its keepalive: a worker no operator
        looks at exits by itself) and count its pool time. False: it did not answer."""
        base = f"http://{(pod.get('status') or {}).get('podIP')}:{names.WORKER_PORT}"
        headers = {"Authorization": f"Bearer {token}"}
        limit = aiohttp.ClientTimeout(total=self.settings.worker_timeout)
        try:
            async with self.http.post(f"{base}/keepalive", headers=headers, timeout=limit) as resp:
                resp.raise_for_status()
            async with self.http.get(f"{base}/status", headers=headers, timeout=limit) as resp:
                resp.raise_for_status()
                worker: JSON = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Claimed meanwhile (the pool token is refused), ending, or not answering: the pool's
            # upkeep sees the pod change; the next look tries again.
            log.info(
                "app %s/%s: pool worker %s did not take the look: %s", *app, pod["metadata"]["name"], exc
            )
            return False
        self.accounting.observe_pool(app[0], app[1], pod["metadata"]["name"], worker, gpus)
        self._saw_suspendable(app, worker)
        return True

    def _saw_suspendable(self, app: Key, worker: JSON) -> None:
        said = worker.get("suspendable")
        if isinstance(said, bool) and self.suspendable.get(app) is not said:
            self.suspendable[app] = said
            self.on_suspendable(app)

    async def hand_over(
        self, session: children.SessionRef, pod: JSON, bearers: list[str], token: str, timeout: int
    ) -> None:
        """Tell a claimed pool worker its session, token and timeout, trying each of ``bearers``
        in turn (the pool's token, then the session's). Idempotent: after a restart mid-claim the
        pool token is refused (it was handed over already) and the session's token repeats it."""
        ip = (pod.get("status") or {}).get("podIP")
        url = f"http://{ip}:{names.WORKER_PORT}/claim"
        payload = {"session": session.name, "token": token, "sessionTimeout": timeout}
        limit = aiohttp.ClientTimeout(total=self.settings.worker_timeout)
        for bearer in bearers:
            headers = {"Authorization": f"Bearer {bearer}"}
            async with self.http.post(url, json=payload, headers=headers, timeout=limit) as resp:
                if resp.status == 200:
                    return
                if resp.status != 401:
                    raise ClaimFailed(
                        f"worker {pod['metadata']['name']} refused the claim: {await resp.text()}"
                    )
        raise ClaimFailed(f"worker {pod['metadata']['name']} took neither the pool's nor the session's token")
