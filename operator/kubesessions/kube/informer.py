"""The one list-then-watch loop, for every watcher of ours that is not kopf: the gateway's
cache, the process node's pods and the benchmarks.

List (raw JSON, no model objects), then watch from the list's resourceVersion with bookmarks;
resume from the last version seen when the API server ends the watch; list again when the
version is too old (410) or the connection fails, after a growing pause.

The watch stream is read here, not through kubernetes_asyncio's ``Watch``: that one builds a
model object (``V1Pod``) from every event of a typed list call: 2.2 ms a Pod event, against
14 us to decode it. Lines are decoded by orjson, the fastest of the three decoders measured on
a burst's event mix (bench/watch_decode.py; docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api.names import JSON

log = logging.getLogger("kubesessions.kube.informer")
WATCH_SECONDS = 290  # the API server ends a watch after this; we resume from the last version
FIRST_BACKOFF = 0.2


class Informer:
    """``on_list`` gets every object of each (re)list, ``on_event`` each change after it."""

    def __init__(
        self,
        what: str,
        lister: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        on_list: Callable[[list[JSON]], None],
        on_event: Callable[[str, JSON], None],
        params: dict[str, Any] | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        """``lister`` a kubernetes_asyncio list call, with ``args`` and ``params`` (selectors)."""
        self.what, self.lister, self.args, self.kwargs = what, lister, args, params or {}
        self.on_list, self.on_event = on_list, on_event
        self.max_backoff = max_backoff
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = FIRST_BACKOFF
        while True:
            try:
                version = await self._list()
                backoff = FIRST_BACKOFF
                while True:
                    version = await self._watch(version)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("%s: watch version expired; listing again", self.what)
                    continue
                log.warning(
                    "%s: API error %s %s; retrying in %.1fs", self.what, exc.status, exc.reason, backoff
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                # ClientPayloadError (a stream cut by an API server restart) is a ClientError.
                log.warning("%s: %s; retrying in %.1fs", self.what, exc, backoff)
            except Exception:
                # A watcher that silently stops would act on stale objects forever: start over.
                log.exception("%s: unexpected failure; listing again in %.1fs", self.what, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _list(self) -> str:
        response = await self.lister(*self.args, _preload_content=False, **self.kwargs)
        try:
            body = await response.read()
        finally:
            response.release()
        if response.status != 200:
            # E.g. 404 for a CRD the API server has not started serving yet.
            raise ApiException(status=response.status, reason=body.decode(errors="replace")[:300])
        data = orjson.loads(body)
        self.on_list(data.get("items") or [])
        self.synced.set()
        return str(data["metadata"]["resourceVersion"])

    async def _watch(self, version: str) -> str:
        response = await self.lister(
            *self.args,
            watch=True,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            _preload_content=False,
            **self.kwargs,
        )
        try:
            if response.status != 200:
                body = await response.read()
                raise ApiException(status=response.status, reason=body.decode(errors="replace")[:300])
            async for line in _lines(response.content):
                event = orjson.loads(line)
                kind, raw = event["type"], event["object"]
                if kind == "ERROR":  # e.g. 410: the version is too old, list again
                    raise ApiException(
                        status=raw.get("code"), reason=f"{raw.get('reason')}: {raw.get('message')}"
                    )
                version = raw["metadata"]["resourceVersion"]
                if kind != "BOOKMARK":
                    self.on_event(kind, raw)
        finally:
            response.release()  # closes the connection when the stream was left midway
        return version


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The stream's lines (one watch event each), however large, as they arrive."""
    pending = b""
    async for chunk in content.iter_any():
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if pending.strip():
        yield pending
