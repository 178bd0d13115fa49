"""What the gateway knows about Sessions and Apps, fed by watches (session tokens are derived,
see api/tokens.py: the gateway reads no Secret).

Calls on existing sessions read only this cache, never the API server. Waiting for a session
to become Ready is waiting on its key's change notifications, not polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from kubernetes_asyncio import client

from kubesessions.api.names import GROUP, JSON, VERSION
from kubesessions.kube.informer import Informer
from kubesessions.kube.objects import cacheable, newer

Key = tuple[str, str]  # (namespace, name)
T = TypeVar("T")


def key_of(body: JSON) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


class Cache:
    """Sessions and Apps of the served namespaces (all namespaces when none are named)."""

    def __init__(self, namespaces: list[str]) -> None:
        self.namespaces = namespaces
        self.sessions: dict[Key, JSON] = {}
        self.apps: dict[Key, JSON] = {}
        self._changed: dict[Key, set[asyncio.Event]] = {}
        self._informers: list[Informer] = []
        self._tasks: list[asyncio.Task[None]] = []

    # -- feeding -------------------------------------------------------------------------

    def start(self, api: client.ApiClient) -> None:
        custom = client.CustomObjectsApi(api)
        served: list[str | None] = [*self.namespaces] or [None]
        for ns in served:
            feeds: list[tuple[str, Callable[..., Awaitable[Any]], tuple[str, ...]]]
            where = ns or "all namespaces"
            if ns is None:
                feeds = [
                    ("sessions", custom.list_cluster_custom_object, (GROUP, VERSION, "sessions")),
                    ("apps", custom.list_cluster_custom_object, (GROUP, VERSION, "apps")),
                ]
            else:
                feeds = [
                    ("sessions", custom.list_namespaced_custom_object, (GROUP, VERSION, ns, "sessions")),
                    ("apps", custom.list_namespaced_custom_object, (GROUP, VERSION, ns, "apps")),
                ]
            for kind, lister, args in feeds:
                self._informers.append(
                    Informer(
                        f"{kind} in {where}", lister, args, self._replacer(kind, ns), self._handler(kind)
                    )
                )
        self._tasks = [asyncio.create_task(i.run(), name=i.what) for i in self._informers]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def synced(self) -> bool:
        return bool(self._informers) and all(i.synced.is_set() for i in self._informers)

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self._informers)), timeout)

    def _replacer(self, kind: str, namespace: str | None) -> Callable[[list[JSON]], None]:
        def replace(items: list[JSON]) -> None:
            store: dict[Key, Any] = getattr(self, kind)
            fresh = {key_of(body): cacheable(body) for body in items}
            for key in [k for k in store if namespace is None or k[0] == namespace]:
                if key not in fresh:
                    del store[key]
                    self._notify(key)
            for key, value in fresh.items():
                store[key] = value
                self._notify(key)

        return replace

    def _handler(self, kind: str) -> Callable[[str, JSON], None]:
        def handle(event: str, body: JSON) -> None:
            self.seen(kind, body, deleted=event == "DELETED")

        return handle

    def seen(self, kind: str, body: JSON, deleted: bool = False) -> None:
        """Record one object (from a watch event, or read or written by the gateway itself)."""
        key = key_of(body)
        store: dict[Key, Any] = getattr(self, kind)
        if kind == "sessions" and not deleted and key in store and not newer(body, store[key]):
            return  # our own create/patch result may be newer than a late watch event
        if deleted:
            store.pop(key, None)
        else:
            store[key] = cacheable(body)
        self._notify(key)

    # -- waiting -------------------------------------------------------------------------

    def _notify(self, key: Key) -> None:
        for event in self._changed.get(key, ()):
            event.set()

    async def wait(self, key: Key, check: Callable[[], T | None], timeout: float) -> T | None:
        """``check()`` once it gives something, re-checked on each change of ``key``; None on timeout."""
        event = asyncio.Event()
        self._changed.setdefault(key, set()).add(event)
        deadline = time.monotonic() + timeout
        try:
            while (result := check()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), left)
                event.clear()
            return result
        finally:
            waiters = self._changed[key]
            waiters.discard(event)
            if not waiters:
                del self._changed[key]
