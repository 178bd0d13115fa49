"""The process node's probes of one pod's containers: startup, then readiness and liveness,
with a kubelet's timing rules (period, thresholds, initial delay, timeout)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kubesessions.api.names import JSON
from kubesessions.localcluster import processes
from kubesessions.localcluster.podspec import ContainerConfigError
from kubesessions.localcluster.podstatus import ContainerRecord


class EventSink(Protocol):
    async def event(self, pod: JSON, kind: str, reason: str, message: str) -> None: ...


class ProbeHost(Protocol):
    """What the probes need of the pod's runner."""

    @property
    def pod(self) -> JSON: ...
    @property
    def ip(self) -> str: ...
    @property
    def dir(self) -> Path: ...
    @property
    def changed(self) -> asyncio.Event: ...
    @property
    def services(self) -> EventSink: ...
    async def environment(self, cspec: JSON) -> tuple[list[str], dict[str, str]]: ...


class Prober:
    def __init__(self, host: ProbeHost) -> None:
        self.host = host
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def container(self, cspec: JSON, rec: ContainerRecord, proc: asyncio.subprocess.Process) -> None:
        startup = cspec.get("startupProbe")
        if startup and not await self._until(startup, cspec, proc, rec, "Startup"):
            return
        rec.started = True
        readiness, liveness = cspec.get("readinessProbe"), cspec.get("livenessProbe")
        if readiness is None:
            rec.ready = True
        self.host.changed.set()
        tasks: list[Coroutine[Any, Any, object]] = []
        if readiness:
            tasks.append(self._readiness(readiness, cspec, rec))
        if liveness:
            tasks.append(self._until(liveness, cspec, proc, rec, "Liveness", stop_on_success=False))
        await asyncio.gather(*tasks)

    async def _readiness(self, probe: JSON, cspec: JSON, rec: ContainerRecord) -> None:
        period, success_needed, failure_allowed = probe_timing(probe)
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        while True:
            ok, why = await self._once(probe, cspec)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            ready = rec.ready
            if ok and successes >= success_needed:
                ready = True
            elif not ok and failures >= failure_allowed:
                ready = False
            if not ok and failures == failure_allowed and rec.ready:
                await self.host.services.event(
                    self.host.pod, "Warning", "Unhealthy", f"Readiness probe failed: {why}"
                )
            if ready != rec.ready:
                rec.ready = ready
                self.host.changed.set()
            await asyncio.sleep(period)

    async def _until(
        self,
        probe: JSON,
        cspec: JSON,
        proc: asyncio.subprocess.Process,
        rec: ContainerRecord,
        kind: str,
        stop_on_success: bool = True,
    ) -> bool:
        """Startup (until it first succeeds) or liveness (forever); kills on failure."""
        period, _, failure_allowed = probe_timing(probe)
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            ok, why = await self._once(probe, cspec)
            if ok and stop_on_success:
                return True
            failures = 0 if ok else failures + 1
            if failures >= failure_allowed:
                message = f"{kind} probe failed: {why}; container {rec.name} will be restarted"
                await self.host.services.event(self.host.pod, "Warning", "Unhealthy", message)
                await processes.terminate(
                    proc, float(self.host.pod["spec"].get("terminationGracePeriodSeconds", 30))
                )
                return False
            await asyncio.sleep(period)

    async def _once(self, probe: JSON, cspec: JSON) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                return await self._http_probe(probe["httpGet"], cspec, timeout)
            if "tcpSocket" in probe:
                port = container_port(probe["tcpSocket"]["port"], cspec)
                host = probe["tcpSocket"].get("host") or self.host.ip
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.close()
                return True, ""
            if "exec" in probe:
                _, env = await self.host.environment(cspec)
                proc = await asyncio.create_subprocess_exec(
                    *probe["exec"]["command"],
                    env=env,
                    cwd=self.host.dir,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                try:
                    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
                except TimeoutError:
                    proc.kill()
                    return False, f"command timed out after {timeout:.0f}s"
                return proc.returncode == 0, out.decode(errors="replace")[-200:]
            return (
                False,
                "probe type not supported on the process node (httpGet, tcpSocket, exec are)",
            )
        except (TimeoutError, OSError, aiohttp.ClientError, ContainerConfigError) as exc:
            return False, str(exc) or type(exc).__name__

    async def _http_probe(self, spec: JSON, cspec: JSON, timeout: float) -> tuple[bool, str]:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        scheme = spec.get("scheme", "HTTP").lower()
        host = spec.get("host") or self.host.ip
        url = f"{scheme}://{host}:{container_port(spec['port'], cspec)}{spec.get('path', '/')}"
        headers = {h["name"]: h["value"] for h in spec.get("httpHeaders", [])}
        async with self._http.get(
            url,
            headers=headers,
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as resp:
            if 200 <= resp.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status}"


def probe_timing(probe: JSON) -> tuple[float, int, int]:
    return (
        float(probe.get("periodSeconds", 10)),
        int(probe.get("successThreshold", 1)),
        int(probe.get("failureThreshold", 3)),
    )


def container_port(port: int | str, cspec: JSON) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in cspec.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ContainerConfigError(f"named port {port!r} is not declared by container {cspec['name']}")
