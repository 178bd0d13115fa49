"""The cost of idleness at issue 6's scale: 1,000 idle sessions with 1-hour timeouts.

Measures, over a quiet window after every session is Ready and the operator's writes have
stopped: the operator's API writes per minute (its own /metrics counter) and per session per
minute (target <= 1), its CPU seconds per minute and peak RSS; for context, the API server's
and the process node's CPU and RSS, and the workers' memory.

The operator under test is the real one (`kubesessions operator`), on the real control plane
of the local cluster. Only the workers are stand-ins: 1,000 real Python workers
(kubesessions-worker, ~40 MB RSS and about a second of CPU each to start) do not fit this
2-core machine, so each session's pod runs bench/stubworker, a small Go program that answers
the part of docs/worker-contract.md the operator uses on an idle session (/readyz, /healthz,
/status, /keepalive, /close?ifIdleFor=) as the real worker does. It is built with `go build`
into a temporary directory and mapped to its own image name on the process node.

Creation stops early (and the window measures what did get Ready) when a wave does not get
Ready in time or the machine runs low on memory; the results say where.
Run with `make bench BENCHES=idle_cost` (or .venv/bin/python bench/idle_cost.py).
Knobs: BENCH_IDLE_COST_SESSIONS (1000), BENCH_IDLE_COST_WAVE (100), BENCH_IDLE_COST_SECONDS (60).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report
from idle import GROUP, NS, wait_ready
from operator_bench import metric_total, proc_stats

from kubesessions.localcluster import cluster, processes
from kubesessions.localcluster.nodeconfig import NodeConfig
from kubesessions.localcluster.state import leftover_pod_processes

SESSIONS = int(os.environ.get("BENCH_IDLE_COST_SESSIONS", "1000"))
WAVE = int(os.environ.get("BENCH_IDLE_COST_WAVE", "100"))
WINDOW = float(os.environ.get("BENCH_IDLE_COST_SECONDS", "60"))
STUB_IMAGE = "bench.kube-sessions.local/stubworker"
APP = "stub"
WRITES = "kubesessions_operator_api_writes_total"
MIN_AVAILABLE_MB = 3000  # stop creating sessions before the machine itself runs short
WAVE_READY_LIMIT = 300.0  # seconds one wave may take to get Ready


def build_stub(out_dir: Path) -> Path:
    binary = out_dir / "stubworker"
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
        cwd=benchcluster.REPO / "bench" / "stubworker",
        env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"},
        check=True,
    )
    return binary


def available_mb() -> float:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    return next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable")) / 1024


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB now: PSS shares the pages common to all stubs (their code) out fairly."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
    return kb["Rss"] / 1024, kb["Pss"] / 1024


def writes_settled(port: int, still: float = 5.0, limit: float = 300.0) -> float:
    """Wait until the operator's write counter has not moved for ``still`` seconds (the Ready
    transitions and first activity records are done); returns the seconds it took."""
    started = time.monotonic()
    last, since = metric_total(port, WRITES), time.monotonic()
    while time.monotonic() - since < still and time.monotonic() - started < limit:
        time.sleep(0.5)
        now = metric_total(port, WRITES)
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - started


def create_in_waves(custom: client.CustomObjectsApi) -> tuple[int, str]:
    """Create the sessions, each wave awaited Ready before the next, so that a count that does
    not fit shows where it stops rather than as a heap of Pending pods. (Ready count, why it
    stopped early or "")."""
    ready = 0
    for wave in range(0, SESSIONS, WAVE):
        if available_mb() < MIN_AVAILABLE_MB:
            return ready, f"MemAvailable below {MIN_AVAILABLE_MB} MB after {ready} sessions"
        names = [f"q{i}" for i in range(wave, min(SESSIONS, wave + WAVE))]
        bodies = [benchcluster.session(n, 3600, app=APP) for n in names]
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(lambda b: custom.create_namespaced_custom_object(*GROUP, NS, "sessions", b), bodies)
            )
        pending = set(names) - wait_ready(custom, set(names), WAVE_READY_LIMIT).keys()
        ready += len(names) - len(pending)
        if pending:
            return (
                ready,
                f"{len(pending)} of {names[0]}..{names[-1]} not Ready within {WAVE_READY_LIMIT:.0f}s",
            )
    return ready, ""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ks-bench-idle-cost-") as tmp:
        stub = build_stub(Path(tmp))
        node = NodeConfig(pods=SESSIONS + 20)
        node.image_map[STUB_IMAGE] = str(stub)
        state_dir = cluster.StateDir(Path(tmp) / "cluster")
        state = cluster.up(state_dir, node, log=lambda _: None)
        pids = {p.name: p.pid for p in state.processes}
        port = cluster.free_port()  # a fixed port could answer for a stray operator
        try:
            api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
            custom = client.CustomObjectsApi(api)
            benchcluster.prepare(api, NS)
            custom.create_namespaced_custom_object(
                *GROUP,
                NS,
                "apps",
                {
                    "apiVersion": "kubesessions.io/v1alpha1",
                    "kind": "App",
                    "metadata": {"name": APP},
                    "spec": {"image": f"{STUB_IMAGE}:bench", "entrypoint": "stub:NoApp"},
                },
            )
            with benchcluster.operator(
                state_dir.kubeconfig, NS, port, Path(tmp) / "operator.log", "--retention", "3600"
            ) as op:
                pids["operator"] = op.pid
                started = time.monotonic()
                ready, stopped = create_in_waves(custom)
                all_ready_seconds = time.monotonic() - started
                settle_seconds = writes_settled(port)
                stubs = [
                    memory_mb(p.pid) for p in leftover_pod_processes(state_dir.node_dir) if processes.alive(p)
                ]
                writes0 = metric_total(port, WRITES)
                before = {name: proc_stats(pid)[1] for name, pid in pids.items()}
                time.sleep(WINDOW)  # the window being measured
                writes1 = metric_total(port, WRITES)
                after = {name: proc_stats(pid) for name, pid in pids.items()}
            recorded = sum(
                1
                for s in custom.list_namespaced_custom_object(*GROUP, NS, "sessions")["items"]
                if (s.get("status") or {}).get("lastActivityTime")
            )
        finally:
            cluster.down(state_dir, log=lambda _: None)
    minutes = WINDOW / 60
    writes = (writes1 - writes0) / minutes
    cpu = {name: (after[name][1] - before[name]) / minutes for name in after}
    results = {
        "sessions_asked": SESSIONS,
        "sessions_ready": ready,
        "stopped_early": stopped,
        "wave": WAVE,
        "create_to_all_ready_seconds": all_ready_seconds,
        "writes_settled_after_seconds": settle_seconds,
        "activity_recorded_sessions": recorded,
        "quiet_window_seconds": WINDOW,
        "api_writes_per_minute": writes,
        "api_writes_per_session_per_minute": writes / ready if ready else None,
        "cpu_seconds_per_minute": cpu,
        "peak_rss_mb": {name: stats[0] for name, stats in after.items()},
        "stub_workers": {
            "count": len(stubs),
            "rss_mb_mean": sum(r for r, _ in stubs) / len(stubs) if stubs else None,
            "rss_mb_max": max((r for r, _ in stubs), default=None),
            "pss_mb_mean": sum(p for _, p in stubs) / len(stubs) if stubs else None,
            "pss_mb_total": sum(p for _, p in stubs),
        },
    }
    per_session = results["api_writes_per_session_per_minute"]
    report.write(
        # Another scale than issue 6's keeps its own file (bench/summary.py reads both).
        "idle_cost" if SESSIONS == 1000 else f"idle_cost_{SESSIONS}",
        results,
        [
            ("idle sessions Ready (stub workers)", f"{ready}/{SESSIONS}", stopped or ""),
            ("create -> all Ready (s)", f"{all_ready_seconds:.0f}", ""),
            (f"API writes/min over {WINDOW:.0f}s", f"{writes:.1f}", ""),
            ("API writes per session per minute", f"{per_session:.4f}" if ready else "n/a", "<= 1"),
            ("operator CPU s per minute", f"{cpu['operator']:.2f}", ""),
            ("operator peak RSS (MB)", f"{after['operator'][0]:.0f}", ""),
            (
                "kube-apiserver CPU s/min, peak RSS MB",
                f"{cpu['kube-apiserver']:.1f}, {after['kube-apiserver'][0]:.0f}",
                "",
            ),
            (
                "process node CPU s/min, peak RSS MB",
                f"{cpu['process-node']:.1f}, {after['process-node'][0]:.0f}",
                "",
            ),
            (
                "stub worker RSS / PSS mean (MB)",
                f"{results['stub_workers']['rss_mb_mean'] or 0:.1f} / {results['stub_workers']['pss_mb_mean'] or 0:.1f}",
                "",
            ),
        ],
    )


if __name__ == "__main__":
    main()
