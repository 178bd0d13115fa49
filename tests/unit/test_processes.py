from __future__ import annotations

import time
from pathlib import Path

import pytest

from kubesessions.localcluster import cluster, processes
from kubesessions.localcluster.addresses import AddressPool, claim_address_block
from kubesessions.localcluster.state import leftover_pod_processes

from ..conftest import await_condition

pytestmark = pytest.mark.unit


def test_spawn_alive_and_stop(tmp_path: Path) -> None:
    record = processes.spawn("sleeper", ["sleep", "30"], tmp_path / "log")
    assert processes.alive(record)
    assert processes.stop([record], grace=5) == []
    assert not processes.alive(record)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(60)"
    )
    log = tmp_path / "log"
    record = processes.spawn("stubborn", ["python3", "-c", script], log)
    # Only once SIGTERM is really ignored does this prove that the SIGKILL after the grace works.
    await_condition(
        lambda: "ignoring SIGTERM" in log.read_text(), 10, "the process to ignore SIGTERM", every=0.01
    )
    started = time.monotonic()
    assert processes.stop([record], grace=0.5) == []
    assert time.monotonic() - started >= 0.5, "it ended before the grace: SIGTERM was not ignored"
    assert not processes.alive(record)


def test_a_reused_pid_is_not_ours() -> None:
    import os

    me = processes.start_ticks(os.getpid())
    assert me is not None
    assert processes.alive(processes.ProcessRecord("me", os.getpid(), me))
    assert not processes.alive(processes.ProcessRecord("me", os.getpid(), me + 1))


def test_leftover_records_are_read_from_the_node_dir(tmp_path: Path) -> None:
    pod_dir = tmp_path / "pods" / "uid-1"
    pod_dir.mkdir(parents=True)
    (pod_dir / "main.pid").write_text('{"name": "main", "pid": 12, "start_ticks": 34}')
    (pod_dir / "bad.pid").write_text("not json")
    assert leftover_pod_processes(tmp_path) == [processes.ProcessRecord("main", 12, 34)]


def test_address_pool_skips_reserved_and_reuses_released() -> None:
    pool = AddressPool()
    first = [pool.take() for _ in range(300)]
    assert first[0] == "127.0.0.2"
    assert len(set(first)) == 300
    assert not any(ip.endswith((".0", ".1", ".255")) for ip in first)
    pool.release("127.0.0.9")
    assert pool.take() == "127.0.0.9"
    assert not pool.claim("127.0.0.2")  # in use
    assert not pool.claim("10.0.0.1")  # never outside loopback


def test_address_pools_of_other_blocks_do_not_overlap() -> None:
    pool = AddressPool(7)
    assert pool.take() == "127.7.0.2"
    assert not pool.claim("127.0.0.3")


def test_each_live_node_gets_its_own_block(tmp_path: Path) -> None:
    first, lock1 = claim_address_block(tmp_path)
    second, lock2 = claim_address_block(tmp_path)
    assert (first, second) == (0, 1)
    lock1.close()  # a node that exits frees its block
    third, lock3 = claim_address_block(tmp_path)
    assert third == 0
    lock2.close()
    lock3.close()


def test_restart_process_runs_the_same_command_line_again_and_records_it(tmp_path: Path) -> None:
    state_dir = cluster.StateDir(tmp_path)
    state_dir.logs.mkdir()
    argv = ["sleep", "61"]
    first = processes.spawn("engine", argv, state_dir.logs / "engine.log")
    other = processes.spawn("other", ["sleep", "62"], state_dir.logs / "other.log")
    state_dir.save(cluster.ClusterState(server="https://127.0.0.1:1", ports={}, processes=[first, other]))
    try:
        fresh = cluster.restart_process(state_dir, "engine")
        assert not processes.alive(first)
        assert processes.alive(fresh) and fresh.pid != first.pid
        assert Path(f"/proc/{fresh.pid}/cmdline").read_bytes().split(b"\0")[:-1] == [a.encode() for a in argv]
        saved = state_dir.load()
        assert saved is not None and saved.processes == [fresh, other]  # in its place, the rest kept
        with pytest.raises(cluster.ClusterError, match="no running missing"):
            cluster.restart_process(state_dir, "missing")
    finally:
        processes.stop([first, other, *(state_dir.load() or cluster.ClusterState("", {})).processes])
