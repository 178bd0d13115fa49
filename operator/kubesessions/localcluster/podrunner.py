"""Runs one pod on the process node: its containers as processes, probes, restarts, status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from ..timefmt import rfc3339
from . import processes
from .addresses import AddressPool
from .logserver import ContainerLog
from .nodeconfig import HOST_IP
from .podspec import ContainerConfigError, ImageNotRunnable, container_argv, container_env
from .podstatus import ContainerRecord, pod_status, will_restart

log = logging.getLogger("kubesessions.processnode")
JSON = dict[str, Any]

BACKOFF_START, BACKOFF_CAP = 1.0, 20.0  # shorter than a kubelet's 10 s .. 5 min: a dev node
CONFIG_QUICK_RETRIES, CONFIG_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.4), 2.0
TERMINATION_MESSAGE_LIMIT = 4096


class PodServices(ABC):
    """What a runner needs from its node."""

    @property
    @abstractmethod
    def image_map(self) -> Mapping[str, str]: ...

    @abstractmethod
    def base_env(self) -> dict[str, str]: ...

    @abstractmethod
    async def lookup(self, kind: str, namespace: str, name: str) -> Mapping[str, str] | None: ...

    @abstractmethod
    async def patch_status(self, pod: JSON, status: JSON) -> JSON | None: ...

    @abstractmethod
    async def event(self, pod: JSON, kind: str, reason: str, message: str) -> None: ...

    @abstractmethod
    async def remove(self, pod: JSON) -> None: ...

    @abstractmethod
    async def service_account_kubeconfig(self, pod: JSON) -> JSON | None:
        """A kubeconfig with a real token of the pod's service account, if it should get one."""


class _PodFailed(Exception):
    """The pod cannot run at all (its failure is already recorded)."""


class PodRunner:
    def __init__(self, pod: JSON, services: PodServices, directory: Path, addresses: AddressPool) -> None:
        self.pod = pod
        self.services = services
        self.dir = directory
        self.addresses = addresses
        self.ip = ""
        self.start_time = rfc3339(precision="seconds")
        spec = pod["spec"]
        self.inits = [
            ContainerRecord(c["name"], c.get("image", ""), init=True) for c in spec.get("initContainers", [])
        ]
        self.mains = [ContainerRecord(c["name"], c.get("image", "")) for c in spec["containers"]]
        self.failure: tuple[str, str] | None = None
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.changed = asyncio.Event()
        self.deleting = asyncio.Event()
        self.stopping = False
        self.gone = False
        self.last_status: JSON = dict(pod.get("status") or {})
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy", "Always"))

    # -- driven by the node's pod watch ---------------------------------------------------

    def start(self, on_done: Callable[[], None]) -> None:
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(lambda t: self._finished(t, on_done))

    def _finished(self, task: asyncio.Task[None], on_done: Callable[[], None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("pod %s: runner failed", self.name, exc_info=task.exception())
        on_done()

    def update(self, pod: JSON) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def vanished(self) -> None:
        """The object is gone (force-deleted): stop at once, write nothing more."""
        self.gone = True
        self.deleting.set()

    # -- the pod's life ---------------------------------------------------------------------

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        previous_ip = self.last_status.get("podIP", "")
        self.ip = previous_ip if previous_ip and self.addresses.claim(previous_ip) else self.addresses.take()
        self.start_time = self.last_status.get("startTime") or self.start_time
        self._adopt_previous_run()
        self.update(self.pod)
        writer = asyncio.create_task(self._write_status())
        lifecycle = asyncio.create_task(self._lifecycle())
        self.changed.set()
        try:
            await self.deleting.wait()
        finally:
            self.stopping = True
            await self.stop_processes(self._grace())
            lifecycle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lifecycle
            if not self.gone:
                await self._flush_status()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not self.gone:
                await self.services.remove(self.pod)
            self.addresses.release(self.ip)
            if self._http is not None:
                await self._http.close()

    def _grace(self) -> float:
        if self.gone:
            return 0.0
        meta, spec = self.pod["metadata"], self.pod["spec"]
        grace = meta.get("deletionGracePeriodSeconds", spec.get("terminationGracePeriodSeconds", 30))
        return float(grace if grace is not None else 30)

    def _adopt_previous_run(self) -> None:
        """A pod this node ran before it restarted: its processes are lost (a kubelet says
        ContainerStatusUnknown); restart policy decides what happens next."""
        old = {s["name"]: s for s in self.last_status.get("containerStatuses") or []}
        old.update({s["name"]: s for s in self.last_status.get("initContainerStatuses") or []})
        for rec in self.inits + self.mains:
            prev = old.get(rec.name)
            if not prev or ("waiting" in prev.get("state", {}) and not prev.get("restartCount")):
                continue
            rec.restart_count = prev.get("restartCount", 0)
            rec.last_state = prev.get("lastState") or {}
            term = prev.get("state", {}).get("terminated")
            rec.state = "terminated"
            if term:
                rec.exit_code, rec.reason = term.get("exitCode", 0), term.get("reason", "Error")
                rec.message = term.get("message", "")
                rec.started_at, rec.finished_at = (
                    term.get("startedAt") or "",
                    term.get("finishedAt", ""),
                )
            else:
                rec.exit_code, rec.reason = 137, "ContainerStatusUnknown"
                rec.message = "the process node restarted and lost this container's process"
                rec.finished_at = rfc3339(precision="seconds")

    async def _lifecycle(self) -> None:
        try:
            spec = self.pod["spec"]
            init_policy = "Never" if self.policy == "Never" else "OnFailure"
            for cspec, rec in zip(spec.get("initContainers", []), self.inits, strict=True):
                await self._supervise(cspec, rec, init_policy)
                if rec.exit_code != 0 or self.stopping:
                    return
            await asyncio.gather(
                *(
                    self._supervise(c, r, self.policy)
                    for c, r in zip(spec["containers"], self.mains, strict=True)
                )
            )
        except _PodFailed:
            pass

    async def _supervise(self, cspec: JSON, rec: ContainerRecord, policy: str) -> None:
        backoff = BACKOFF_START
        while not self.stopping:
            if rec.state == "terminated":
                if not will_restart(policy, rec):
                    return
                rec.last_state = {"terminated": rec.terminated()}
                rec.restart_count += 1
                rec.state, rec.reason = "waiting", "CrashLoopBackOff"
                rec.message = f"back-off {backoff:.0f}s restarting failed container={rec.name}"
                self.changed.set()
                await self._sleep_unless_deleting(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
                continue
            await self._run_once(cspec, rec)

    async def _sleep_unless_deleting(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), seconds)

    def _pod_view(self) -> JSON:
        """The pod as the downward API should see it (podIP known before status is written)."""
        status = {
            **(self.pod.get("status") or {}),
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
        }
        return {**self.pod, "status": status}

    async def _environment(self, cspec: JSON) -> tuple[list[str], dict[str, str]]:
        fetched: dict[tuple[str, str, str], Mapping[str, str] | None] = {}
        for kind, ns, name in _references(self.pod, cspec):
            try:
                fetched[(kind, ns, name)] = await self.services.lookup(kind, ns, name)
            except Exception as exc:
                raise ContainerConfigError(f"reading {kind} {name}: {exc}") from exc
        own = container_env(self._pod_view(), cspec, lambda k, ns, n: fetched.get((k, ns, n)))
        argv = container_argv(cspec, own, self.services.image_map)
        env = self.services.base_env()
        env.update(
            {
                "HOSTNAME": self.pod["metadata"]["name"],
                "TMPDIR": str(self.dir / "tmp"),
                # The process node cannot mount /dev/termination-log; the worker writes here.
                "KUBESESSIONS_TERMINATION_MESSAGE_PATH": str(self._termination_file(cspec["name"])),
            }
        )
        kubeconfig = await self._service_account_kubeconfig()
        if kubeconfig is not None:
            # In place of the token a kubelet would mount: clients fall back to KUBECONFIG.
            env["KUBECONFIG"] = str(kubeconfig)
        env.update(own)
        return argv, env

    async def _service_account_kubeconfig(self) -> Path | None:
        path = self.dir / "serviceaccount" / "kubeconfig"
        if path.exists():
            return path
        try:
            config = await self.services.service_account_kubeconfig(self.pod)
        except Exception as exc:
            raise ContainerConfigError(f"requesting a service-account token: {exc}") from exc
        if config is None:
            return None
        path.parent.mkdir(mode=0o700, exist_ok=True)
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def _log_file(self, container: str) -> Path:
        return self.dir / f"{container}.log"

    def container_log(self, container: str) -> ContainerLog | None:
        """The container's output (every run of it), for the node's log endpoint."""
        if container not in {rec.name for rec in self.inits + self.mains}:
            return None
        return ContainerLog(self._log_file(container), running=lambda: container in self.procs)

    def _termination_file(self, container: str) -> Path:
        return self.dir / f"{container}.termination-log"

    async def _run_once(self, cspec: JSON, rec: ContainerRecord) -> None:
        quick = list(CONFIG_QUICK_RETRIES)
        while True:
            try:
                argv, env = await self._environment(cspec)
                break
            except ImageNotRunnable as exc:
                rec.state, rec.reason, rec.message = "waiting", "ErrImagePull", str(exc)
                self.failure = ("ErrImagePull", str(exc))
                self.changed.set()
                await self.services.event(self.pod, "Warning", "Failed", str(exc))
                raise _PodFailed from exc
            except ContainerConfigError as exc:
                # The API server's Node authorizer learns of a newly bound pod's Secrets a
                # moment after the binding, so the first read can be refused (403): a few quick
                # tries first, and only a refusal that lasts is reported.
                if quick:
                    await self._sleep_unless_deleting(quick.pop(0))
                    if self.stopping:
                        return
                    continue
                if (rec.reason, rec.message) != ("CreateContainerConfigError", str(exc)):
                    rec.state, rec.reason, rec.message = (
                        "waiting",
                        "CreateContainerConfigError",
                        str(exc),
                    )
                    self.changed.set()
                    await self.services.event(self.pod, "Warning", "Failed", f"Error: {exc}")
                await self._sleep_unless_deleting(CONFIG_RETRY_SECONDS)
                if self.stopping:
                    return
        workdir = Path(cspec.get("workingDir") or self.dir)
        term_file = self._termination_file(rec.name)
        term_file.unlink(missing_ok=True)
        log_path = self._log_file(rec.name)
        rec.started_at, rec.message = rfc3339(precision="seconds"), ""
        try:
            with log_path.open("ab") as out:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=workdir if workdir.is_dir() else self.dir,
                    start_new_session=True,
                )
        except OSError as exc:
            rec.state, rec.reason, rec.exit_code, rec.pid = "terminated", "StartError", 128, 0
            rec.message = f"failed to start {argv[0]!r}: {exc.strerror or exc}"
            rec.finished_at = rfc3339(precision="seconds")
            self.changed.set()
            await self.services.event(self.pod, "Warning", "Failed", rec.message)
            return
        self.procs[rec.name] = proc
        pid_file = self.dir / f"{rec.name}.pid"
        ticks = processes.start_ticks(proc.pid)
        if ticks is not None:
            pid_file.write_text(json.dumps(processes.ProcessRecord(rec.name, proc.pid, ticks).to_json()))
        rec.state, rec.reason, rec.pid = "running", "", proc.pid
        rec.ready = rec.started = False
        probes = asyncio.create_task(self._probe_container(cspec, rec, proc))
        self.changed.set()
        if not rec.init:
            await self.services.event(
                self.pod, "Normal", "Started", f"Started container {rec.name} (pid {proc.pid})"
            )
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # what the container started goes with it
        probes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probes
        pid_file.unlink(missing_ok=True)
        self.procs.pop(rec.name, None)
        rec.state, rec.ready, rec.started = "terminated", False, False
        rec.exit_code = code if code >= 0 else 128 - code
        rec.signal = -code if code < 0 else 0
        rec.reason = "Completed" if code == 0 else "Error"
        rec.finished_at = rfc3339(precision="seconds")
        rec.message = _termination_message(cspec, term_file, log_path, rec.exit_code)
        self.changed.set()

    # -- probes -------------------------------------------------------------------------

    async def _probe_container(
        self, cspec: JSON, rec: ContainerRecord, proc: asyncio.subprocess.Process
    ) -> None:
        startup = cspec.get("startupProbe")
        if startup and not await self._probe_until(startup, cspec, proc, rec, "Startup"):
            return
        rec.started = True
        readiness, liveness = cspec.get("readinessProbe"), cspec.get("livenessProbe")
        if readiness is None:
            rec.ready = True
        self.changed.set()
        tasks: list[Coroutine[Any, Any, object]] = []
        if readiness:
            tasks.append(self._readiness(readiness, cspec, rec))
        if liveness:
            tasks.append(self._probe_until(liveness, cspec, proc, rec, "Liveness", stop_on_success=False))
        await asyncio.gather(*tasks)

    async def _readiness(self, probe: JSON, cspec: JSON, rec: ContainerRecord) -> None:
        period, success_needed, failure_allowed = _probe_timing(probe)
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        while True:
            ok, why = await self._probe_once(probe, cspec)
            successes, failures = (successes + 1, 0) if ok else (0, failures + 1)
            ready = rec.ready
            if ok and successes >= success_needed:
                ready = True
            elif not ok and failures >= failure_allowed:
                ready = False
            if not ok and failures == failure_allowed and rec.ready:
                await self.services.event(self.pod, "Warning", "Unhealthy", f"Readiness probe failed: {why}")
            if ready != rec.ready:
                rec.ready = ready
                self.changed.set()
            await asyncio.sleep(period)

    async def _probe_until(
        self,
        probe: JSON,
        cspec: JSON,
        proc: asyncio.subprocess.Process,
        rec: ContainerRecord,
        kind: str,
        stop_on_success: bool = True,
    ) -> bool:
        """Startup (until it first succeeds) or liveness (forever); kills on failure."""
        period, _, failure_allowed = _probe_timing(probe)
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            ok, why = await self._probe_once(probe, cspec)
            if ok and stop_on_success:
                return True
            failures = 0 if ok else failures + 1
            if failures >= failure_allowed:
                message = f"{kind} probe failed: {why}; container {rec.name} will be restarted"
                await self.services.event(self.pod, "Warning", "Unhealthy", message)
                await _terminate(proc, float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
                return False
            await asyncio.sleep(period)

    async def _probe_once(self, probe: JSON, cspec: JSON) -> tuple[bool, str]:
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if "httpGet" in probe:
                return await self._http_probe(probe["httpGet"], cspec, timeout)
            if "tcpSocket" in probe:
                port = _port(probe["tcpSocket"]["port"], cspec)
                host = probe["tcpSocket"].get("host") or self.ip
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.close()
                return True, ""
            if "exec" in probe:
                _, env = await self._environment(cspec)
                proc = await asyncio.create_subprocess_exec(
                    *probe["exec"]["command"],
                    env=env,
                    cwd=self.dir,
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
        host = spec.get("host") or self.ip
        url = f"{scheme}://{host}:{_port(spec['port'], cspec)}{spec.get('path', '/')}"
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

    # -- stopping and status --------------------------------------------------------------

    async def stop_processes(self, grace: float = 30.0) -> None:
        self.stopping = True
        await asyncio.gather(*(_terminate(p, grace) for p in list(self.procs.values())))

    async def _write_status(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            try:
                await self._flush_status()
            except Exception as exc:
                log.warning("pod %s: status update failed (retrying): %s", self.name, exc)
                await asyncio.sleep(1)
                self.changed.set()

    async def _flush_status(self) -> None:
        status = pod_status(
            {**self.pod, "status": self.last_status},
            self.inits,
            self.mains,
            pod_ip=self.ip,
            host_ip=HOST_IP,
            start_time=self.start_time,
            failure=self.failure,
        )
        if _same_status(status, self.last_status):
            return
        result = await self.services.patch_status(self.pod, status)
        if result is None:
            self.vanished()
            return
        self.last_status = result.get("status", status)


def _same_status(new: JSON, old: JSON) -> bool:
    return all(old.get(k) == v for k, v in new.items() if v is not None)


def _probe_timing(probe: JSON) -> tuple[float, int, int]:
    return (
        float(probe.get("periodSeconds", 10)),
        int(probe.get("successThreshold", 1)),
        int(probe.get("failureThreshold", 3)),
    )


def _port(port: int | str, cspec: JSON) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in cspec.get("ports", []):
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ContainerConfigError(f"named port {port!r} is not declared by container {cspec['name']}")


def _references(pod: JSON, cspec: JSON) -> set[tuple[str, str, str]]:
    """The Secrets and ConfigMaps a container's env reads."""
    ns = pod["metadata"]["namespace"]
    refs = set()
    for item in cspec.get("envFrom", []):
        if "secretRef" in item:
            refs.add(("secret", ns, item["secretRef"]["name"]))
        if "configMapRef" in item:
            refs.add(("configmap", ns, item["configMapRef"]["name"]))
    for var in cspec.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            refs.add(("secret", ns, ref["secretKeyRef"]["name"]))
        if "configMapKeyRef" in ref:
            refs.add(("configmap", ns, ref["configMapKeyRef"]["name"]))
    return refs


def _termination_message(cspec: JSON, term_file: Path, log_path: Path, exit_code: int) -> str:
    try:
        message = term_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    except OSError:
        message = ""
    if not message and exit_code != 0 and cspec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        with contextlib.suppress(OSError):
            tail = log_path.read_bytes()[-2048:].decode(errors="replace")
            message = "\n".join(tail.splitlines()[-80:])
    return message


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the container's process group, SIGKILL it after ``grace`` seconds."""
    if proc.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), wait)
            return
        except TimeoutError:
            continue
