"""Facts about Kubernetes objects that the operator and the gateway share."""

from __future__ import annotations

from kubesessions.api.names import JSON


def cacheable(body: JSON) -> JSON:
    """``body`` without ``metadata.managedFields``, for keeping: nothing here reads them, and
    they are about a third of a pod as the API sends it (a copy: the event's own body is kopf's)."""
    meta = body.get("metadata")
    if not meta or "managedFields" not in meta:
        return body
    return {**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


# The fields of a pod's spec the operator reads (status.py: is it on a node yet? and of each
# container its name and memory limit: the limit an OOMKilled worker's Session names). It builds
# pods and never reads the rest of their specs back.
POD_SPEC_READ = ("nodeName",)


def cacheable_pod(body: JSON) -> JSON:
    """:func:`cacheable`, with the spec cut to ``POD_SPEC_READ`` and the containers' memory
    limits: containers, env, volumes and the defaults the API server fills in are more than half
    of a pod held as Python objects (a worker pod: about 18 KB whole, 8 KB cut)."""
    slim = cacheable(body)
    spec = body.get("spec")
    if spec is None:
        return slim
    kept = {field: spec[field] for field in POD_SPEC_READ if field in spec}
    if spec.get("containers"):
        kept["containers"] = [_memory_limit_of(container) for container in spec["containers"]]
    return {**slim, "spec": kept}


def _memory_limit_of(container: JSON) -> JSON:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    kept: JSON = {"name": container.get("name")}
    if limit is not None:
        kept["resources"] = {"limits": {"memory": limit}}
    return kept


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
