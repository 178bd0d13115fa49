"""The process node's API calls by path, made through kubernetes_asyncio (the operator side's
one Kubernetes client family: its kubeconfig loading, TLS and connection pool). Objects stay
JSON both ways: the node copies pod specs into processes and never needs model objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

JSON = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"


class ApiClient:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.server = str(api.configuration.host)

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
        """The reply's JSON; :class:`ApiException` (with ``status``) for any error status."""
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
            raise ApiException(status=reply.status, reason=f"{method} {path}: {message}")
        result: JSON = json.loads(text) if text else {}
        return result

    async def get(self, path: str, **params: str) -> JSON:
        return await self.request("GET", path, params=params or None)
