"""POST /suspend and POST /resume: the app's state packed, checked, carried to and from a
presigned URL (here a real HTTP server on loopback that stores PUTs and serves GETs, as the
object store does), and every guard: busy, too large, corrupt, refused, failing app code."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubesessions_worker import suspension
from kubesessions_worker.runner import State
from kubesessions_worker.termination import Reason

from .harness import AUTH, Worker, until, worker

pytestmark = pytest.mark.unit


@dataclass
class Store:
    """Objects by path; ``refuse`` makes every request answer that status."""

    server: TestServer
    objects: dict[str, bytes] = field(default_factory=dict)
    refuse: int | None = None

    def url(self, key: str = "state.tar") -> str:
        return str(self.server.make_url(f"/bucket/{key}?X-Amz-Signature=abc"))


@asynccontextmanager
async def store() -> AsyncIterator[Store]:
    app = web.Application(client_max_size=1 << 30)
    holder: list[Store] = []

    async def put(request: web.Request) -> web.Response:
        if holder[0].refuse:
            return web.Response(status=holder[0].refuse, text="AccessDenied")
        holder[0].objects[request.match_info["key"]] = await request.read()
        return web.Response()

    async def get(request: web.Request) -> web.Response:
        if holder[0].refuse:
            return web.Response(status=holder[0].refuse, text="AccessDenied")
        found = holder[0].objects.get(request.match_info["key"])
        return web.Response(body=found) if found is not None else web.Response(status=404)

    app.router.add_put("/bucket/{key}", put)
    app.router.add_get("/bucket/{key}", get)
    async with TestServer(app, host="127.0.0.1") as server:
        holder.append(Store(server))
        yield holder[0]


async def post(w: Worker, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with w.client.post(path, json=body, headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def suspend(w: Worker, s: Store, max_bytes: int = 1 << 20) -> tuple[int, Any]:
    return await post(w, "/suspend", {"url": s.url(), "max_bytes": max_bytes})


@pytest.mark.parametrize("app", ["Counter", "AsyncNotes"])
async def test_state_survives_suspend_and_resume_on_another_worker(app: str) -> None:
    async with store() as s:
        async with worker(app) as first:
            for value in (40, 2):
                assert (await first.call(value))[0] == 200
            status, saved = await suspend(first, s)
            assert status == 200, saved
            ending = await first.runner.ending()
        data = s.objects["state.tar"]
        assert saved["bytes"] == len(data)
        assert saved["sha256"] == hashlib.sha256(data).hexdigest()
        assert saved["app"].endswith(f":{app}") and saved["seconds"] >= 0
        # The worker ends, saying so: the operator reads the result from the termination message
        # if the reply was lost.
        assert ending.reason is Reason.SUSPENDED and ending.exit_code == 0
        assert json.loads(ending.message)["sha256"] == saved["sha256"]

        async with worker(app) as second:
            resume = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
            status, body = await post(second, "/resume", resume)
            assert status == 200, body
            status, body = await second.call(1)
        assert status == 200
        assert body["output"] == (43 if app == "Counter" else ["40", "2", "1"])


async def test_the_tar_holds_the_state_and_a_manifest() -> None:
    async with store() as s, worker("Counter") as w:
        await w.call(7)
        status, saved = await suspend(w, s)
        assert status == 200
    with tarfile.open(fileobj=io.BytesIO(s.objects["state.tar"])) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert tar.extractfile("state/count.txt").read() == b"7"  # type: ignore[union-attr]
    assert names[-1] == "manifest.json" and "state/nested/blob.bin" in names
    assert manifest["app"].endswith(":Counter") and manifest["appVersion"] == "2.1"
    assert manifest["sessionId"] == "s-test" and manifest["files"] == 2
    assert saved["app_version"] == "2.1"
    state_part = s.objects["state.tar"][: manifest["stateBytes"]]
    assert hashlib.sha256(state_part).hexdigest() == manifest["stateSha256"]


async def test_status_says_whether_the_app_can_be_suspended() -> None:
    for app, expected in (("Counter", True), ("Echo", False)):
        async with worker(app) as w, w.client.get("/status", headers=AUTH) as resp:
            assert (await resp.json())["suspendable"] is expected


async def test_an_app_without_suspend_and_resume_is_not_suspendable() -> None:
    async with store() as s, worker("Echo") as w:
        status, body = await suspend(w, s)
        assert (status, body["code"]) == (409, "NOT_SUSPENDABLE")
        resume = {"url": s.url(), "sha256": "0" * 64, "bytes": 10}
        assert (await post(w, "/resume", resume))[1]["code"] == "NOT_SUSPENDABLE"
        assert w.runner.state is State.READY and not s.objects


async def test_a_running_call_wins_over_suspend() -> None:
    async with store() as s, worker("Counter") as w:
        w.app.gate = threading.Event()
        call = asyncio.create_task(w.call(0))
        await until(lambda: w.runner.status().in_flight, "the call to start")
        status, body = await suspend(w, s)
        assert (status, body["code"]) == (409, "BUSY")
        w.app.gate.set()
        assert (await call)[0] == 200
        assert w.runner.state is State.READY and not s.objects


async def test_calls_during_a_suspend_are_refused_and_the_state_is_the_last_calls() -> None:
    async with store() as s, worker("Counter") as w:
        await w.call(5)
        w.app.gate = threading.Event()
        suspending = asyncio.create_task(suspend(w, s))
        await until(lambda: w.runner.state is State.SUSPENDING, "the suspend to start")
        status, body = await w.call(1)
        assert (status, body["code"]) == (409, "SUSPENDING")
        async with w.client.get("/readyz") as resp:  # still the session's until it exits
            assert resp.status == 200
        async with w.client.post("/keepalive", headers=AUTH) as resp:  # the operator's looks too
            assert resp.status == 200
        w.app.gate.set()
        status, _ = await suspending
        assert status == 200
        assert w.runner.state is State.CLOSING
    with tarfile.open(fileobj=io.BytesIO(s.objects["state.tar"])) as tar:
        assert tar.extractfile("state/count.txt").read() == b"5"  # type: ignore[union-attr]


async def test_state_over_max_bytes_is_not_uploaded_and_the_session_goes_on() -> None:
    async with store() as s, worker("Hoarder") as w:
        await w.call(100_000)
        status, body = await suspend(w, s, max_bytes=50_000)
        assert (status, body["code"]) == (413, "STATE_TOO_LARGE")
        assert "50000" in body["detail"]
        assert not s.objects
        assert w.runner.state is State.READY
        assert (await w.call(10))[0] == 200
        status, saved = await suspend(w, s, max_bytes=50_000)
        assert status == 200 and saved["bytes"] <= 50_000


@pytest.mark.parametrize("refuse", [None, 403])
async def test_a_failing_suspend_says_why_and_the_session_goes_on(refuse: int | None) -> None:
    async with store() as s, worker("AsyncNotes") as w:
        await w.call("a")
        s.refuse = refuse
        if refuse is None:
            w.app.fail = "suspend"
        status, body = await suspend(w, s)
        assert (status, body["code"]) == (500, "SUSPEND_FAILED")
        assert ("disk full" if refuse is None else "403") in body["detail"]
        assert w.runner.state is State.READY and not s.objects
        assert (await w.call("b"))[1]["output"] == ["a", "b"]


async def test_links_in_the_state_are_refused() -> None:
    async with store() as s, worker("Linker") as w:
        status, body = await suspend(w, s)
        assert (status, body["code"]) == (500, "SUSPEND_FAILED")
        assert "state/link" in body["detail"]


async def _saved(app: str, s: Store) -> dict[str, Any]:
    async with worker(app) as w:
        await w.call(3)
        status, saved = await suspend(w, s)
        assert status == 200
        return dict(saved)


@pytest.mark.parametrize("damage", ["sha256", "bytes", "content", "missing"])
async def test_corrupt_state_is_never_handed_to_the_app(damage: str) -> None:
    async with store() as s:
        saved = await _saved("Counter", s)
        body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
        if damage == "sha256":
            body["sha256"] = "f" * 64
        elif damage == "bytes":
            body["bytes"] -= 1
        elif damage == "content":
            data = bytearray(s.objects["state.tar"])
            data[600] ^= 1
            s.objects["state.tar"] = bytes(data)
        else:
            del s.objects["state.tar"]
        async with worker("Counter") as w:
            status, problem = await post(w, "/resume", body)
            expected = (500, "RESUME_FAILED") if damage == "missing" else (422, "STATE_CORRUPT")
            assert (status, problem["code"]) == expected, problem
            assert w.app.resumed_from == []
            ending = await w.runner.ending()
        assert ending.reason is Reason.RESUME_FAILED and ending.exit_code == 1
        assert problem["code"] in ending.message


async def test_a_failing_resume_ends_the_worker_with_the_apps_message() -> None:
    async with store() as s:
        saved = await _saved("AsyncNotes", s)
        async with worker("AsyncNotes") as w:
            w.app.fail = "resume"
            body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
            status, problem = await post(w, "/resume", body)
            assert (status, problem["code"]) == (500, "RESUME_FAILED")
            assert "notes from another world" in problem["detail"]
            assert (await w.call("x"))[1]["code"] == "SESSION_ENDED"
        assert s.objects["state.tar"]  # the saved state is the operator's to keep or delete


async def test_resume_only_on_a_worker_that_has_taken_nothing() -> None:
    async with store() as s:
        saved = await _saved("Counter", s)
        body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
        async with worker("Counter") as used:
            await used.call(1)
            status, problem = await post(used, "/resume", body)
            assert (status, problem["code"]) == (409, "RESUME_REFUSED")
            assert (await used.call(1))[1]["output"] == 2  # untouched
        async with worker("Counter") as twice:
            assert (await post(twice, "/resume", body))[0] == 200
            assert (await post(twice, "/resume", body))[1]["code"] == "RESUME_REFUSED"


async def test_calls_during_a_resume_wait_and_run_after_it_in_order() -> None:
    async with store() as s:
        saved = await _saved("Counter", s)
        async with worker("Counter") as w:
            w.app.gate = threading.Event()
            body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
            resuming = asyncio.create_task(post(w, "/resume", body))
            await until(lambda: w.runner._resuming, "the resume to start")
            first = asyncio.create_task(w.call(1))
            await until(lambda: w.runner.status().queued == 1, "the first call to queue")
            second = asyncio.create_task(w.call(10))
            await until(lambda: w.runner.status().queued == 2, "the second call to queue")
            assert w.runner.status().in_flight == 0 and w.runner.idle_seconds() == 0
            w.app.gate.set()
            assert (await resuming)[0] == 200
            assert (await first)[1]["output"] == 4
            assert (await second)[1]["output"] == 14


async def test_a_resume_asked_again_while_it_runs_gets_its_answer() -> None:
    """An operator that restarted mid-resume asks again: it is answered when the first resume
    ends, with its outcome (not "already resumed" while the state is still coming in)."""
    async with store() as s:
        saved = await _saved("Counter", s)
        async with worker("Counter") as w:
            w.app.gate = threading.Event()
            body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
            first = asyncio.create_task(post(w, "/resume", body))
            await until(lambda: w.runner._resuming, "the resume to start")
            again = asyncio.create_task(post(w, "/resume", body))
            await asyncio.sleep(0.2)  # time enough for a wrong early answer to come
            assert not again.done()
            w.app.gate.set()
            assert [(await t)[0] for t in (first, again)] == [200, 200]
            assert (await w.call(1))[1]["output"] == 4  # resumed once: 3 saved, then 1
            assert (await post(w, "/resume", body))[1]["code"] == "RESUME_REFUSED"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/suspend", {"url": "file:///etc/passwd", "max_bytes": 1}, "url"),
        ("/suspend", {"url": "http://x/y", "max_bytes": 0}, "max_bytes"),
        ("/suspend", {"url": "http://x/y", "max_bytes": True}, "max_bytes"),
        ("/resume", {"url": "http://x/y", "sha256": "ab", "bytes": 1}, "sha256"),
        ("/resume", {"url": "http://x/y", "sha256": "a" * 64, "bytes": "1"}, "bytes"),
        ("/resume", [], "JSON object"),
    ],
)
async def test_bad_bodies_name_the_field(path: str, body: Any, field: str) -> None:
    async with worker("Counter") as w:
        status, problem = await post(w, path, body)
        assert (status, problem["code"]) == (400, "VALIDATION")
        assert field in problem["detail"]
        assert w.runner.state is State.READY


async def test_suspend_and_resume_need_the_token() -> None:
    async with worker("Counter") as w:
        for path in ("/suspend", "/resume"):
            async with w.client.post(path, json={}) as resp:
                assert resp.status == 401


def _tar_with(path: Any, *entries: tarfile.TarInfo) -> None:
    manifest = json.dumps({"app": "x"}).encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(suspension.MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for entry in entries:
            tar.addfile(entry, io.BytesIO(b"x" * entry.size) if entry.isfile() else None)


def test_unpack_works_where_extractall_has_no_filter(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian bookworm's Python 3.11.2 (the worker image's) has no `filter` argument: a resume
    # there failed with a TypeError (HTTP 500) before the members were checked by the worker.
    real = tarfile.TarFile.extract

    def old_extract(self: tarfile.TarFile, member: Any, path: Any = "") -> None:
        real(self, member, path)

    monkeypatch.delattr(tarfile, "data_filter")
    monkeypatch.setattr(tarfile.TarFile, "extract", old_extract)
    good = tarfile.TarInfo(f"{suspension.STATE}/notes.json")
    good.size, good.mode = 3, 0o4755
    _tar_with(tmp_path / "ok.tar", good)
    with (tmp_path / "ok.tar").open("rb") as stream:
        state, manifest = suspension.unpack(stream, tmp_path / "ok")
    assert (state / "notes.json").read_bytes() == b"xxx" and manifest == {"app": "x"}
    assert (state / "notes.json").stat().st_mode & 0o7000 == 0
    link = tarfile.TarInfo(f"{suspension.STATE}/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    escape = tarfile.TarInfo("../escaped")
    escape.size = 1
    for name, entry, why in (("link", link, "only files and folders"), ("escape", escape, "outside")):
        _tar_with(tmp_path / f"{name}.tar", entry)
        with pytest.raises(ValueError, match=why), (tmp_path / f"{name}.tar").open("rb") as stream:
            suspension.unpack(stream, tmp_path / name)
    assert not (tmp_path / "escaped").exists()


def test_the_planned_size_is_the_tars_size_whatever_the_names(tmp_path: Any) -> None:
    """The upload says its length before a byte is sent: long and non-ASCII names (PAX
    headers), empty files and folders, sizes off the block size all counted exactly."""
    source = tmp_path / "state"
    deep = source / ("d" * 120) / "é-ü"
    deep.mkdir(parents=True)
    (source / "empty").mkdir()
    (deep / ("f" * 150)).write_bytes(b"x" * 513)
    (source / "zero").touch()
    (source / "notes.json").write_text("[1, 2]")
    plan = suspension._Planned(source, {"app": "x"})
    sent = io.BytesIO()
    packed = suspension.pack(plan, sent.write)
    assert len(sent.getvalue()) == plan.bytes == packed.bytes
    assert hashlib.sha256(sent.getvalue()).hexdigest() == packed.sha256
    sent.seek(0)
    state, manifest = suspension.unpack(sent, tmp_path / "out")
    assert (state / ("d" * 120) / "é-ü" / ("f" * 150)).read_bytes() == b"x" * 513
    assert (state / "empty").is_dir() and (state / "zero").read_bytes() == b""
    assert manifest["files"] == 3 and manifest["stateBytes"] < plan.bytes


def test_a_file_that_grows_while_it_is_packed_fails_the_suspend(tmp_path: Any) -> None:
    (tmp_path / "blob").write_bytes(b"x" * 100)
    plan = suspension._Planned(tmp_path, {})
    (tmp_path / "blob").write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="changed while it was packed"):
        suspension.pack(plan, io.BytesIO().write)
