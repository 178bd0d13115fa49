"""Runs one pod on the process node: its containers as processes, probes, restarts, status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from kubesessions.api.names import JSON
from kubesessions.common.timefmt import rfc3339
from kubesessions.localcluster import processes
from kubesessions.localcluster.addresses import AddressPool
from kubesessions.localcluster.logserver import ContainerLog
from kubesessions.localcluster.nodeconfig import HOST_IP
from kubesessions.localcluster.podservices import PodServices
from kubesessions.localcluster.podspec import (
    ContainerConfigError,
    ImageNotRunnable,
    Mount,
    container_argv,
    container_env,
    container_mounts,
    env_references,
    redirect_paths,
    volume_env_name,
    volume_files,
    volume_object,
)
from kubesessions.localcluster.podstatus import (
    ContainerRecord,
    pod_status,
    same_status,
    termination_message,
    will_restart,
)
from kubesessions.localcluster.probes import Prober

log = logging.getLogger("kubesessions.processnode")

BACKOFF_START, BACKOFF_CAP = 1.0, 20.0  # shorter than a kubelet's 10 s .. 5 min: a dev node
CONFIG_QUICK_RETRIES, CONFIG_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.4), 2.0


SHORT_LINKS = "kube-sessions-pod-"  # prefix of the pods' links in the machine's temp directory


def short_link(uid: str) -> Path:
    """Where a pod's short link lives: 12 hex digits of a random uid do not clash."""
    return Path(tempfile.gettempdir()) / f"{SHORT_LINKS}{uid.replace('-', '')[:12]}"


def remove_short_links(node_dir: Path) -> None:
    """The links left pointing into ``node_dir`` (a node that stopped with pods on it)."""
    for link in Path(tempfile.gettempdir()).glob(f"{SHORT_LINKS}*"):
        with contextlib.suppress(OSError):
            if link.is_symlink() and Path(os.readlink(link)).is_relative_to(node_dir.resolve()):
                link.unlink()


class _PodFailed(Exception):
    """The pod cannot run at all (its failure is already recorded)."""


class PodRunner:
    def __init__(self, pod: JSON, services: PodServices, directory: Path, addresses: AddressPool) -> None:
        self.pod = pod
        self.services = services
        self.dir = directory
        # What the pod's processes are given for its files (TMPDIR, volumes): a short link to
        # ``directory`` in the machine's temporary directory. A state dir deep in a checkout made
        # those paths too long for a Unix socket in TMPDIR (108 bytes: Chromium's singleton
        # socket failed "Socket path too long"); in a real pod they are /tmp and the mount path.
        self.short_dir = short_link(pod["metadata"]["uid"])
        self.addresses = addresses
        self.ip = ""
        self._holds_ip = False
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
        self.prober = Prober(self)
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

    def remove_files(self) -> None:
        """The pod's directory and its short link, once the pod is gone."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self.short_dir.unlink(missing_ok=True)

    def vanished(self) -> None:
        """The object is gone (force-deleted): stop at once, write nothing more."""
        self.gone = True
        self.deleting.set()

    # -- the pod's life ---------------------------------------------------------------------

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        if not (self.short_dir.is_symlink() and self.short_dir.resolve() == self.dir.resolve()):
            self.short_dir.unlink(missing_ok=True)
            self.short_dir.symlink_to(self.dir.resolve(), target_is_directory=True)
        self._adopt_previous_run()
        previous_ip = self.last_status.get("podIP", "")
        # A pod's IP never changes (the API refuses a second one). A node back on another
        # address block cannot claim it; a pod whose lost containers will not run again keeps
        # it anyway, else its status could never be written and its deletion never finish.
        done = self.policy == "Never" and any(rec.state == "terminated" for rec in self.mains)
        # Released at the end only if this pod holds it in the pool: a finished pod that keeps
        # an address now another pod's (a node back after a crash) must not free it under that
        # pod, or the next pod gets it too ("address already in use").
        self._holds_ip = bool(previous_ip) and self.addresses.claim(previous_ip)
        if self._holds_ip or (previous_ip and done):
            self.ip = previous_ip
        else:
            self.ip, self._holds_ip = self.addresses.take(), True
        self.start_time = self.last_status.get("startTime") or self.start_time
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
            if self._holds_ip:
                self.addresses.release(self.ip)
            await self.prober.close()

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

    async def environment(self, cspec: JSON) -> tuple[list[str], dict[str, str]]:
        """The container's command line and environment, as a kubelet would build them."""
        fetched: dict[tuple[str, str, str], Mapping[str, str] | None] = {}
        for kind, ns, name in env_references(self.pod, cspec):
            try:
                fetched[(kind, ns, name)] = await self.services.lookup(kind, ns, name)
            except Exception as exc:
                raise ContainerConfigError(f"reading {kind} {name}: {exc}") from exc
        mounts = container_mounts(self.pod, cspec)
        directories = {m.mount_path: str(await self._volume_directory(m)) for m in mounts}
        own = container_env(self._pod_view(), cspec, lambda k, ns, n: fetched.get((k, ns, n)))
        own = redirect_paths(own, directories, os.path.exists)
        argv = container_argv(cspec, own, self.services.image_map)
        env = self.services.base_env()
        env.update(
            {
                "HOSTNAME": self.pod["metadata"]["name"],
                "TMPDIR": str(self.short_dir / "tmp"),
                # The process node cannot mount /dev/termination-log; the worker writes here.
                "KUBESESSIONS_TERMINATION_MESSAGE_PATH": str(self._termination_file(cspec["name"])),
            }
        )
        kubeconfig = await self._service_account_kubeconfig()
        if kubeconfig is not None:
            # In place of the token a kubelet would mount: clients fall back to KUBECONFIG.
            env["KUBECONFIG"] = str(kubeconfig)
        env.update({volume_env_name(m.name): directories[m.mount_path] for m in mounts})
        env.update(own)
        return argv, env

    async def _volume_directory(self, mount: Mount) -> Path:
        """The directory standing in for a mount (the node mounts nothing): the volume's own
        under the pod's directory, so it goes with the pod; a configMap or secret volume's
        files are written afresh at each container start."""
        volume = self.short_dir / "volumes" / mount.name
        found = volume_object(mount)
        if found is not None:
            kind, name = found
            try:
                data = await self.services.lookup(kind, self.pod["metadata"]["namespace"], name)
            except Exception as exc:
                raise ContainerConfigError(f"reading {kind} {name} (volume {mount.name}): {exc}") from exc
            files = volume_files(mount, data)
            shutil.rmtree(volume, ignore_errors=True)
            volume.mkdir(parents=True, mode=0o700)
            for path, (content, mode) in files.items():
                target = volume / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                target.chmod(mode)
        target = volume / mount.sub_path if mount.sub_path else volume
        target.mkdir(parents=True, exist_ok=True)
        return target

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
                argv, env = await self.environment(cspec)
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
        probes = asyncio.create_task(self.prober.container(cspec, rec, proc))
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
        rec.message = termination_message(cspec, term_file, log_path, rec.exit_code)
        self.changed.set()

    # -- stopping and status --------------------------------------------------------------

    async def stop_processes(self, grace: float = 30.0) -> None:
        self.stopping = True
        await asyncio.gather(*(processes.terminate(p, grace) for p in list(self.procs.values())))

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
        if same_status(status, self.last_status):
            return
        result = await self.services.patch_status(self.pod, status)
        if result is None:
            self.vanished()
            return
        self.last_status = result.get("status", status)
