"""Faults for the fault suite (`make chaos`): crash or restart one process of a local cluster.

A process is started again as it was started: the same command line, environment and working
directory (read from /proc while it lives), output appended to the same log; its record in the
state file is replaced, so `down` stops the new one. Development and test clusters only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from kubesessions.localcluster import processes
from kubesessions.localcluster.state import ClusterError, StateDir, leftover_pod_processes

NODE = "process-node"


def record(state_dir: StateDir, name: str) -> processes.ProcessRecord:
    """The live process ``name`` of the cluster (etcd, kube-apiserver, process-node, ...)."""
    state = state_dir.load()
    found = [p for p in (state.processes if state else []) if p.name == name]
    if not found or not processes.alive(found[0]):
        raise ClusterError(f"no live {name} in the cluster at {state_dir.root}")
    return found[0]


def kill(records: Iterable[processes.ProcessRecord]) -> None:
    """``kill -9`` each live record's process group, and wait until it is gone."""
    live = [r for r in records if processes.alive(r)]
    for rec in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(processes.alive(r) for r in live):
        if time.monotonic() > deadline:
            raise ClusterError(f"still alive after SIGKILL: {[(r.name, r.pid) for r in live]}")
        for rec in live:  # our own children linger as zombies until collected
            with contextlib.suppress(ChildProcessError):
                os.waitpid(rec.pid, os.WNOHANG)
        time.sleep(0.02)


def restart(state_dir: StateDir, name: str, *, crash: bool = False, down_for: float = 0.0) -> float:
    """Stop ``name`` (SIGTERM with a grace period; ``crash``: ``kill -9``), wait ``down_for``
    seconds, start it again. Crashing the process node crashes every pod process with it, as
    a machine that loses power does. Returns the moment (monotonic) it was stopped."""
    old = record(state_dir, name)
    proc = Path(f"/proc/{old.pid}")
    argv = [a.decode() for a in proc.joinpath("cmdline").read_bytes().split(b"\0") if a]
    env = dict(
        item.decode().split("=", 1)
        for item in proc.joinpath("environ").read_bytes().split(b"\0")
        if b"=" in item
    )
    cwd = proc.joinpath("cwd").resolve()
    if crash:
        pods = leftover_pod_processes(state_dir.node_dir) if name == NODE else []
        kill([old, *pods])
    elif processes.stop([old]):
        raise ClusterError(f"{name} (pid {old.pid}) did not stop")
    stopped = time.monotonic()
    time.sleep(down_for)
    new = processes.spawn(name, argv, state_dir.logs / f"{name}.log", env=env, cwd=cwd)
    state = state_dir.load()
    assert state is not None
    state.processes = [new if p.name == name else p for p in state.processes]
    state_dir.save(state)
    return stopped


def pod_processes(state_dir: StateDir, pod_uid: str) -> list[processes.ProcessRecord]:
    """The live container processes the process node runs for one pod (``<container>.pid``
    files in the pod's directory, written while each lives)."""
    found = []
    for pid_file in (state_dir.node_dir / "pods" / pod_uid).glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, KeyError, AssertionError):
            found.append(processes.ProcessRecord.from_json(json.loads(pid_file.read_text())))
    return [r for r in found if processes.alive(r)]
