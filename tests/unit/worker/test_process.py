"""The worker as a process: how it ends (exit code and termination message) in every case."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import AUTH, TOKEN, eventually, spec

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]  # the fixture apps import as tests.unit.worker.apps
START_TIMEOUT = 20.0


@dataclass
class Proc:
    process: asyncio.subprocess.Process
    termination: Path
    lines: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def exit_code(self, timeout: float = 20.0) -> int:
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"the worker did not exit within {timeout:g}s; logs: {self.lines}") from None

    def ending(self) -> dict[str, Any]:
        text = self.termination.read_text()
        assert text.count("\n") == 1 and text.endswith("\n"), "one JSON line"
        result: dict[str, Any] = json.loads(text)
        return result

    async def status(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.url}/status", headers=AUTH) as resp:
            result: dict[str, Any] = await resp.json()
            return result


async def _read_logs(proc: Proc, listening: asyncio.Future[str]) -> None:
    assert proc.process.stderr is not None
    async for raw in proc.process.stderr:
        line = json.loads(raw)
        proc.lines.append(line)
        if line["message"].startswith("listening on ") and not listening.done():
            listening.set_result(line["message"].removeprefix("listening on "))
    if not listening.done():
        listening.set_exception(AssertionError(f"the worker exited before listening; logs: {proc.lines}"))


@asynccontextmanager
async def worker_process(
    tmp_path: Path, app: str, *flags: str, ready: bool = True, **env: str
) -> AsyncIterator[Proc]:
    termination = tmp_path / "termination-log"
    environment = {
        "PATH": os.environ["PATH"],
        "SESSION_ID": "s-proc",
        "KUBESESSIONS_APP": spec(app),
        "KUBESESSIONS_SESSION_TOKEN": TOKEN,
        "KUBESESSIONS_TERMINATION_MESSAGE_PATH": str(termination),
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from kubesessions_worker.cli import main; sys.exit(main())",
        "--host=127.0.0.1",
        "--port=0",
        *flags,
        cwd=REPO,
        env=environment,
        stderr=asyncio.subprocess.PIPE,
    )
    proc = Proc(process, termination)
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    reader = asyncio.create_task(_read_logs(proc, listening))
    try:
        proc.url = await asyncio.wait_for(listening, START_TIMEOUT)
        if ready:
            await _until_ready(proc)
        yield proc
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await reader
    assert TOKEN not in json.dumps(proc.lines)
    assert all(line.get("session") == "s-proc" for line in proc.lines), "every line names the session"


async def test_setup_failure_exits_1_with_its_reason(tmp_path: Path) -> None:
    async with worker_process(tmp_path, "FailingSetup", ready=False) as proc:
        assert await proc.exit_code() == 1
    ending = proc.ending()
    assert ending["reason"] == "SetupFailed"
    assert ending["message"] == "RuntimeError: no model here"
    assert ending["sessionId"] == "s-proc"
    assert any("Traceback" in line.get("error", "") for line in proc.lines), "the traceback is logged"


async def test_close_runs_the_apps_close_and_exits_0(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    config = json.dumps({"marker": str(marker)})
    async with (
        worker_process(tmp_path, "Ender", KUBESESSIONS_CONFIG=config) as proc,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{proc.url}/run", json={"input": "hi"}, headers=AUTH) as resp:
            assert (await resp.json())["output"] == "hi"
        async with http.post(f"{proc.url}/close", headers=AUTH) as resp:
            assert resp.status == 202
        assert await proc.exit_code() == 0
    assert proc.ending()["reason"] == "Closed"
    assert marker.read_text() == "closed"


async def test_end_session_replies_then_exits_closed_by_app(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    config = json.dumps({"marker": str(marker)})
    async with (
        worker_process(tmp_path, "Ender", KUBESESSIONS_CONFIG=config) as proc,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{proc.url}/run", json={"input": "bye"}, headers=AUTH) as resp:
            body = await resp.json()
            assert (body["output"], body["sessionClosed"]) == ("bye", True)
        assert await proc.exit_code() == 0
    assert proc.ending() == {
        "reason": "ClosedByApp",
        "message": "the app called end_session()",
        "sessionId": "s-proc",
    }
    assert marker.exists()


async def test_sigterm_lets_the_running_call_finish_then_closes(tmp_path: Path) -> None:
    marker, release = tmp_path / "closed", tmp_path / "release"
    config = json.dumps({"marker": str(marker)})
    async with (
        worker_process(tmp_path, "Lingering", KUBESESSIONS_CONFIG=config) as proc,
        aiohttp.ClientSession() as http,
    ):
        call = asyncio.create_task(
            http.post(f"{proc.url}/run", json={"input": {"release": str(release)}}, headers=AUTH)
        )
        await _until_status(proc, http, lambda s: s["inFlight"] == 1, "the call to start")
        proc.process.send_signal(signal.SIGTERM)
        await _until_status(proc, http, lambda s: s["state"] == "CLOSING", "the worker to start closing")
        async with http.post(f"{proc.url}/run", json={"input": 1}, headers=AUTH) as late:
            assert late.status == 410
        assert not marker.exists(), "close() must wait for the running call"
        release.touch()
        async with await call as resp:
            body = await resp.json()
            assert (body["output"], body["sessionClosed"]) == ("finished", True)
        assert await proc.exit_code() == 0
    assert proc.ending()["reason"] == "Terminated"
    assert marker.exists()


async def test_idle_past_timeout_and_grace_exits_by_itself(tmp_path: Path) -> None:
    async with worker_process(tmp_path, "Ender", SESSION_TIMEOUT="1", KUBESESSIONS_IDLE_GRACE="0") as proc:
        assert await proc.exit_code(timeout=10) == 0
    assert proc.ending()["reason"] == "IdleTimeout"


async def test_an_unclaimed_pool_worker_exits_once_the_operator_stops_looking(tmp_path: Path) -> None:
    """The operator's keepalives keep an unclaimed pool worker; without them (the operator
    uninstalled, or down) it gives its GPU back after its App's timeout plus the grace."""
    env = {"KUBESESSIONS_POOL": "true", "SESSION_TIMEOUT": "4", "KUBESESSIONS_IDLE_GRACE": "1"}
    async with worker_process(tmp_path, "Ender", **env) as proc, aiohttp.ClientSession() as http:
        for _ in range(12):  # 6 s of looks, every 0.5 s: past the 5 s window, still alive
            async with http.post(f"{proc.url}/keepalive", headers=AUTH) as resp:
                assert resp.status == 200, await resp.text()
            await asyncio.sleep(0.5)
        assert proc.process.returncode is None
        assert await proc.exit_code(timeout=20) == 0
    ending = proc.ending()
    assert ending["reason"] == "IdleTimeout"
    assert "unclaimed pool worker the operator has not looked at for more than 5s" in ending["message"]


async def test_bad_settings_exit_1_with_the_reason(tmp_path: Path) -> None:
    termination = tmp_path / "termination-log"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from kubesessions_worker.cli import main; sys.exit(main())",
        env={"KUBESESSIONS_TERMINATION_MESSAGE_PATH": str(termination), "KUBESESSIONS_APP": "a:B"},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 1
    assert b"SESSION_ID, KUBESESSIONS_SESSION_TOKEN" in stderr
    assert json.loads(termination.read_text())["reason"] == "SetupFailed"


async def _until_ready(proc: Proc) -> None:
    async def readyz() -> int:
        async with aiohttp.ClientSession() as http, http.get(f"{proc.url}/readyz") as resp:
            return resp.status

    await eventually(
        readyz, lambda status: status == 200, f"the worker to get ready (logs: {proc.lines})", START_TIMEOUT
    )


async def _until_status(proc: Proc, http: aiohttp.ClientSession, check: Any, what: str) -> None:
    await eventually(lambda: proc.status(http), check, what)


async def test_sigterm_during_setup_exits_without_waiting_for_it(tmp_path: Path) -> None:
    config = json.dumps({"release": str(tmp_path / "never")})
    async with worker_process(tmp_path, "SlowSetup", ready=False, KUBESESSIONS_CONFIG=config) as proc:
        proc.process.send_signal(signal.SIGTERM)
        assert await proc.exit_code(timeout=10) == 0
    assert proc.ending()["reason"] == "Terminated"


async def test_a_call_stuck_past_the_stop_grace_does_not_keep_the_process(tmp_path: Path) -> None:
    release = tmp_path / "never"
    async with (
        worker_process(tmp_path, "Lingering", "--stop-grace=0.2") as proc,
        aiohttp.ClientSession() as http,
    ):
        call = asyncio.create_task(
            http.post(f"{proc.url}/run", json={"input": {"release": str(release)}}, headers=AUTH)
        )
        await _until_status(proc, http, lambda s: s["inFlight"] == 1, "the call to start")
        proc.process.send_signal(signal.SIGTERM)
        async with await call as resp:
            assert (resp.status, (await resp.json())["code"]) == (410, "SESSION_ENDED")
        assert await proc.exit_code(timeout=10) == 0
    assert proc.ending()["reason"] == "Terminated"


async def test_an_app_that_never_returns_ends_the_session_and_frees_the_worker(tmp_path: Path) -> None:
    wedged = "kubesessions_worker.examples.wedged:Wedged"
    async with (
        worker_process(tmp_path, wedged, "--call-grace=0.5", KUBESESSIONS_CALL_TIMEOUT="0.5") as proc,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{proc.url}/run", json={"input": "fine"}, headers=AUTH) as resp:
            assert (await resp.json())["output"] == "fine"
        async with http.post(f"{proc.url}/run", json={"input": {"hang": True}}, headers=AUTH) as resp:
            assert (resp.status, (await resp.json())["code"]) == (504, "CALL_TIMEOUT")
        assert await proc.exit_code(timeout=10) == 1, "the stuck thread must not keep the GPU"
    ending = proc.ending()
    assert ending["reason"] == "CallTimeout"
    assert "call 2 " in ending["message"] and "0.5s" in ending["message"], ending["message"]


async def test_suspend_replies_then_exits_0_saying_where_the_state_is(tmp_path: Path) -> None:
    from .test_suspend import store

    async with (
        store() as s,
        worker_process(tmp_path, "Counter", TMPDIR=str(tmp_path)) as proc,
        aiohttp.ClientSession() as http,
    ):
        async with http.post(f"{proc.url}/run", json={"input": 42}, headers=AUTH) as resp:
            assert (await resp.json())["output"] == 42
        body = {"url": s.url(), "max_bytes": 1 << 20}
        async with http.post(f"{proc.url}/suspend", json=body, headers=AUTH) as resp:
            saved = await resp.json()
            assert resp.status == 200, saved
        assert await proc.exit_code() == 0
    ending = proc.ending()
    assert (ending["reason"], ending["sessionId"]) == ("Suspended", "s-proc")
    assert json.loads(ending["message"]) == saved  # an operator that lost the reply learns it here
    assert list(tmp_path.glob("suspend-*")) == []  # the packed state's folder is gone
