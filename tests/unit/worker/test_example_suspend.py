"""The example apps' suspend -> resume round trips, at the app level, through the worker (its
/suspend packs what the app wrote, /resume hands it to another worker of the same app): what a
session had is what it has after waking. The presigned URLs are stood in for by a loopback
store (test_suspend.store)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import AUTH, Worker, worker
from .test_suspend import Store, store

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).parents[3] / "examples"


@pytest.fixture(autouse=True)
def examples_path() -> Iterator[None]:
    paths = [str(EXAMPLES / name) for name in ("chat", "data", "browser", "model")]
    sys.path[:0] = paths
    yield
    del sys.path[: len(paths)]


async def call(w: Worker, function: str, input: dict[str, Any]) -> Any:
    status, body = await w.call(input, function=function)
    assert status == 200, body
    return body["output"]


async def move(first: Worker, s: Store) -> Any:
    """Suspend ``first`` into ``s``: what the suspend answered."""
    async with first.client.post("/suspend", json={"url": s.url(), "max_bytes": 1 << 24}, headers=AUTH) as r:
        saved = await r.json()
        assert r.status == 200, saved
    return saved


async def resumed(w: Worker, s: Store, saved: dict[str, Any]) -> None:
    body = {"url": s.url(), "sha256": saved["sha256"], "bytes": saved["bytes"]}
    async with w.client.post("/resume", json=body, headers=AUTH) as r:
        assert r.status == 200, await r.text()


async def test_the_counter_at_42_answers_43_after_waking() -> None:
    spec = "kubesessions_worker.examples.counter:Counter"
    async with store() as s:
        async with worker(spec) as first:
            await call(first, "reset", {"to": 42})
            saved = await move(first, s)
        async with worker(spec) as second:
            await resumed(second, s, saved)
            assert (await call(second, "run", {}))["total"] == 43


async def test_a_chat_keeps_its_turns_and_facts() -> None:
    spec = "chat_app:ChatApp"
    async with store() as s:
        async with worker(spec) as first:
            for text in ("My name is Ada.", "I like gliders.", "The weather was grey in Leeds"):
                await call(first, "message", {"text": text})
            saved = await move(first, s)
        async with worker(spec) as second:
            await resumed(second, s, saved)
            reply = await call(second, "message", {"text": "What is my name?"})
            assert (reply["turn"], reply["reply"]) == (4, "Your name is Ada (you told me in turn 1).")
            echo = await call(second, "message", {"text": "Leeds again"})
            assert "The weather was grey in Leeds" in echo["reply"]
            assert len((await call(second, "history", {}))["turns"]) == 1 + 2 * 5


async def test_data_reloads_the_dataset_the_session_had(tmp_path: Path) -> None:
    pytest.importorskip("duckdb")
    spec = "data_app:DataApp"
    async with store() as s:
        async with worker(spec, config={"rows": 2000, "seed": 3, "dataDir": str(tmp_path)}) as first:
            before = await call(first, "summary", {})
            saved = await move(first, s)
        assert saved["bytes"] <= 10_240  # one tar record: the parameters, not the table
        # Another worker of the App set up with another dataset (as a pool worker is, from env).
        async with worker(spec, config={"rows": 500, "seed": 9, "dataDir": str(tmp_path)}) as second:
            await resumed(second, s, saved)
            after = await call(second, "summary", {})
    assert (after["rows"], after["result"]) == (2000, before["result"])


@pytest.mark.skipif(
    not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no system Chromium here"
)
async def test_the_browser_comes_back_to_its_page_with_its_fields() -> None:
    pytest.importorskip("playwright")
    spec = "browser_app:BrowserApp"
    async with store() as s:
        async with worker(spec) as first:
            await call(first, "start", {})
            await call(first, "type", {"selector": "#name", "text": "Ada"})
            saved = await move(first, s)
        async with worker(spec) as second:
            await resumed(second, s, saved)
            app = second.runner.app.instance
            # Playwright's sync objects belong to the app thread: read the page there.
            url = await second.runner.app.thread.run(lambda: app.page.url)
            assert url == app.site_url  # this worker's own site, not the first one's port
            clicked = await call(second, "click", {"selector": "#greet"})
            assert "Hello, Ada!" in clicked["text"]


def test_the_model_has_no_state_to_save() -> None:
    pytest.importorskip("sklearn")
    import model_app

    # Every worker of the App loads the same weights; a session has nothing else to keep.
    assert not hasattr(model_app.ModelApp, "suspend") and not hasattr(model_app.ModelApp, "resume")
