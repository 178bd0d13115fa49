"""The one way our processes reach the Kubernetes API: :func:`api_client` makes the
connection (kubernetes_asyncio: kubeconfig or in-cluster credentials, TLS, token refresh, a
connection pool) and :class:`Kube` calls it by path, JSON both ways.

Calls by path rather than through the generated API classes: those are code a process must
hold (CoreV1Api alone ~3 MB; the first use of any of them loaded all of them, 14 MB, until
:mod:`.slimimports` made that lazy), and every reply they turn into model objects is CPU spent
on fields nobody reads."""

from __future__ import annotations

import json
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubesessions.api.names import JSON
from kubesessions.kube import slimimports

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

API_CONNECTIONS = 16  # at most, to the API server, per process (the operator's, the gateway's)


async def api_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    # Each pooled TLS connection to the API server holds ~0.3 MB (asyncio's 256 KiB read buffer,
    # OpenSSL's state); the client's default of 100 kept ~110 open after a 100-Session burst,
    # 14 MiB of buffers. The API server on a small control plane serves few at once anyway.
    configuration.connection_pool_maxsize = API_CONNECTIONS
    api = client.ApiClient(configuration)
    slimimports.skip_proxy_lookups(api)
    return api


def path_part(part: str) -> str:
    """One segment of an API path, quoted: no value a caller passes (a namespace or name from a
    request) can add a segment or climb out of its place; "." and ".." would be resolved away by
    the HTTP client whether quoted or not, so they are refused."""
    if part in ("", ".", ".."):
        raise ValueError(f"{part!r} cannot be a segment of an API path")
    return urllib.parse.quote(part, safe="")


def core_path(namespace: str, resource: str, name: str = "") -> str:
    """``/api/v1/namespaces/{namespace}/{resource}[/{name}]``, each part quoted (:func:`path_part`)."""
    return f"/api/v1/namespaces/{path_part(namespace)}/{path_part(resource)}" + (
        f"/{path_part(name)}" if name else ""
    )


def group_path(group_version: str, namespace: str, resource: str, name: str = "") -> str:
    """``/apis/{group}/{version}/namespaces/{namespace}/{resource}[/{name}]``, each part quoted
    (:func:`path_part`)."""
    group_version = "/".join(path_part(part) for part in group_version.split("/"))
    return f"/apis/{group_version}/namespaces/{path_part(namespace)}/{path_part(resource)}" + (
        f"/{path_part(name)}" if name else ""
    )


def _camel(name: str) -> str:
    """resource_version -> resourceVersion: a query parameter's name on the wire."""
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def write_kind(method: str, path: str, content_type: str) -> str | None:
    """What a request writes, as "verb resource[/subresource]" ("patch sessions/status",
    "create pods"); None for a read."""
    verb = _VERBS.get(method)
    if verb is None:
        return None
    if content_type == APPLY_PATCH:
        verb = "apply"
    parts = [p for p in path.split("?")[0].split("/") if p]
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:]  # past /api/v1 or /apis/group/version
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]
    return verb + " " + "/".join(rest[:1] + rest[2:3])


class Kube:
    """Calls by path over one :func:`api_client` connection; any error status raises
    :class:`ApiException` with ``status`` set and the API server's message as ``reason``.

    Every write is counted here, where it is made (``writes``: "verb resource" -> requests
    sent, whatever their outcome), so no caller keeps books of its own."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.server = str(api.configuration.host)
        self.writes: Counter[str] = Counter()

    async def close(self) -> None:
        await self.api.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> JSON:
        """The reply's JSON."""
        write = write_kind(method, path, content_type)
        if write is not None:
            self.writes[write] += 1
        reply = await self.api.call_api(
            path,
            method,
            query_params=list((params or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=timeout,
        )
        try:
            text = await reply.text()
        finally:
            reply.release()
        if reply.status >= 400:
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            error = ApiException(status=reply.status, reason=f"{method} {path}: {message}")
            error.headers = reply.headers  # Retry-After, on a 429
            raise error
        result: JSON = json.loads(text) if text else {}
        return result

    def lister(self, path: str) -> Callable[..., Awaitable[Any]]:
        """A list call by path for :class:`~kubesessions.kube.informer.Informer` (``watch=True``
        to watch), answering the raw response: no generated API class is loaded for it (the
        core one alone is megabytes of code). Parameters are named as kubernetes_asyncio's."""

        async def call(*, _preload_content: bool = False, **params: Any) -> Any:
            query = [
                (_camel(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()
            ]
            return await self.api.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
            )

        return call

    async def get(self, path: str, **params: str) -> JSON:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.request("POST", path, body=body)

    async def delete(self, path: str, uid: str | None = None) -> JSON:
        """``uid``: delete only the object with this uid (409 Conflict if another one holds the
        name now)."""
        body = {"preconditions": {"uid": uid}} if uid else None
        return await self.request("DELETE", path, body=body)

    async def merge_patch(self, path: str, body: JSON) -> JSON:
        return await self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    async def apply(self, path: str, body: JSON, field_manager: str) -> JSON:
        """Server-side apply, taking over fields another manager set."""
        params = {"fieldManager": field_manager, "force": "true"}
        return await self.request("PATCH", path, body=body, params=params, content_type=APPLY_PATCH)
