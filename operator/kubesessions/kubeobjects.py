"""Facts about Kubernetes objects that the operator and the gateway share."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def cacheable(body: JSON) -> JSON:
    """``body`` without ``metadata.managedFields``, for keeping: nothing here reads them, and
    they are about a third of a pod as the API sends it (a copy: the event's own body is kopf's)."""
    meta = body.get("metadata")
    if not meta or "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def newer(body: JSON, cached: JSON | None) -> bool:
    """Whether ``body`` is at least as new as ``cached``. A cache updated by our own writes must
    not be rolled back by a watch event still in flight from before them. resourceVersions are
    etcd revisions and only grow for one object (same uid); where one does not parse, trust
    the event."""
    if cached is None or cached["metadata"].get("uid") != body["metadata"].get("uid"):
        return True
    try:
        return int(body["metadata"]["resourceVersion"]) >= int(cached["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True
