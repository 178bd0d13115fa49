"""The informer reads a real HTTP watch stream: events split across writes, objects larger than
a socket read, bookmarks, and the 410 that sends it back to list."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubesessions.api.names import JSON
from kubesessions.kube.informer import Informer

pytestmark = pytest.mark.unit

BIG = "x" * 300_000  # an object larger than any one read off the socket


def pod(name: str, version: str, note: str = "") -> JSON:
    return {"metadata": {"name": name, "resourceVersion": version, "annotations": {"note": note}}}


async def test_events_in_pieces_bookmarks_and_410() -> None:
    watches: list[str] = []
    third, finished = asyncio.Event(), asyncio.Event()

    async def pods(request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            return web.json_response({"metadata": {"resourceVersion": "5"}, "items": [pod("a", "5")]})
        watches.append(request.query["resource_version"])  # as the lister below names it
        response = web.StreamResponse()
        await response.prepare(request)
        if len(watches) > 2:  # the test has seen what it needs; hold the stream open
            third.set()
            await finished.wait()
        events: list[dict[str, Any]] = [
            {"type": "ADDED", "object": pod("big", "6", BIG)},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}},
            {"type": "MODIFIED", "object": pod("a", "8")},
        ]
        if len(watches) == 2:
            events = [{"type": "ERROR", "object": {"code": 410, "reason": "Expired", "message": "too old"}}]
        data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
        for start in range(0, len(data), 7001):  # writes that cut lines anywhere
            await response.write(data[start : start + 7001])
        return response  # the API server ends the watch: the informer resumes from "8"

    app = web.Application()
    app.router.add_get("/pods", pods)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    lists: list[list[str]] = []
    changes: list[tuple[str, str, int]] = []
    async with aiohttp.ClientSession() as http:

        async def lister(*_: Any, _preload_content: bool, **params: Any) -> aiohttp.ClientResponse:
            assert _preload_content is False
            query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
            return await http.get(f"http://127.0.0.1:{port}/pods", params=query)

        informer = Informer(
            "pods",
            lister,
            (),
            lambda items: lists.append([p["metadata"]["name"] for p in items]),
            lambda kind, obj: changes.append(
                (kind, obj["metadata"]["name"], len(obj["metadata"]["annotations"]["note"]))
            ),
        )
        task = asyncio.create_task(informer.run())
        try:
            async with asyncio.timeout(30):
                await third.wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finished.set()
    await runner.cleanup()
    # Listed, watched from the list's version; resumed from the last event's version ("8"); the
    # 410 there sent it back to list, and it watched again from the new list's version.
    assert watches == ["5", "8", "5"]
    assert lists == [["a"], ["a"]]
    assert changes == [("ADDED", "big", len(BIG)), ("MODIFIED", "a", 0)]
