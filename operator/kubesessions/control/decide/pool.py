"""Pure decisions of an App's warm pool: its workers' manifests, which to create or delete,
which a new Session may claim, and the pool's status. No API calls (see :mod:`kubesessions.control.act.pool`)."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from kubesessions.api import names
from kubesessions.api.models import AppSpec, PoolStrategy, SessionSpec, WarmPoolStatus, effective_timeout
from kubesessions.api.names import (
    API_VERSION,
    CLAIMED_AT,
    CLAIMED_BY,
    JSON,
    POOL_ENV,
    POOL_LABEL,
    TEMPLATE_HASH,
)
from kubesessions.control.decide import children

# Seconds the pool's upkeep (replacements, the App's status) waits after a claim.
REFILL_PAUSE = 0.5
# The operator's looks at an unclaimed pool worker per window after which one that nobody
# looks at exits by itself: two looks in a row may fail before a live operator loses it.
LOOKS_PER_WINDOW = 3


def secret_name(app: str) -> str:
    """The per-App Secret with the pool token (read by the operator only)."""
    return f"{app}-pool-token"


def selector(app: str) -> str:
    return f"{names.MANAGED_BY}={names.MANAGER},{POOL_LABEL}={app}"


def template_hash(app: AppSpec) -> str:
    """What a pool worker's pod depends on: the App less its pool settings."""
    spec = app.model_dump(mode="json", exclude={"warmPool"}, exclude_none=True)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def claim_refusal(app: AppSpec, spec: SessionSpec) -> str | None:
    """Why a Session of ``app`` cannot take a pool worker (None: it can). A pool worker ran
    the App's setup with no config on the App's template: a Session asking for anything else
    (its own config, image, resources, env...) needs a worker of its own."""
    if spec.config:
        return "it sets config (pool workers ran setup without one)"
    if spec.template is not None:
        asked = children.merge_template(app, spec.template)
        if asked != children.merge_template(app, None):
            return "its template differs from the App's"
    return None


def build_pod(namespace: str, app_name: str, app_uid: str, app: AppSpec, *, idle_grace: int) -> JSON:
    """An unclaimed pool worker: the App's worker pod with the pool token, owned by the App."""
    name = f"{app_name[:200]}-pool-{secrets.token_hex(4)}"
    ref = children.SessionRef(name=name, namespace=namespace, uid=app_uid)
    pod = children.build_pod(ref, app_name, app, SessionSpec(app=app_name), idle_grace=idle_grace)
    meta = pod["metadata"]
    meta["labels"].pop(names.SESSION_LABEL)
    meta["labels"][POOL_LABEL] = app_name
    meta.setdefault("annotations", {})[TEMPLATE_HASH] = template_hash(app)
    meta["ownerReferences"] = [
        {
            "apiVersion": API_VERSION,
            "kind": "App",
            "name": app_name,
            "uid": app_uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    env = pod["spec"]["containers"][0]["env"]
    for var in env:
        # Whatever variable carries the session token carries the pool's until the claim.
        ref_ = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref_ and ref_.get("name") == children.token_secret_name(name):
            ref_["name"] = secret_name(app_name)
    env.append({"name": POOL_ENV, "value": "true"})
    return pod


@dataclass(frozen=True)
class Member:
    """One unclaimed pool worker as the pod watch last showed it."""

    name: str
    resource_version: str
    template: str
    ready: bool
    deleting: bool
    ended: bool  # the worker exited (its setup failed, say): the pod stays until deleted
    created: str  # creationTimestamp: RFC 3339 sorts as text
    ip: str | None
    # Exited with an error (its setup failed): unlike an orphan's clean exit (nobody looked at
    # it, the operator being away), a reason to wait before starting more.
    failed: bool = False


def member(pod: JSON) -> Member:
    meta, status = pod["metadata"], pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return Member(
        name=meta["name"],
        resource_version=meta.get("resourceVersion", ""),
        template=(meta.get("annotations") or {}).get(TEMPLATE_HASH, ""),
        ready=ready and bool(status.get("podIP")),
        deleting=bool(meta.get("deletionTimestamp")),
        ended=status.get("phase") in ("Succeeded", "Failed"),
        created=meta.get("creationTimestamp") or "",
        ip=status.get("podIP"),
        failed=status.get("phase") == "Failed",
    )


@dataclass(frozen=True)
class Plan:
    create: int
    delete: tuple[str, ...]


def plan(size: int, strategy: PoolStrategy, current: str, members: list[Member]) -> Plan:
    """Bring the pool to ``size`` live workers. Ended workers go. Recreate: workers of an older
    template go at once. Extra workers go starting ones first, then the newest (the oldest have
    proven ready)."""
    ended = [m for m in members if m.ended and not m.deleting]
    live = [m for m in members if not m.deleting and not m.ended]
    stale = [m for m in live if m.template != current] if strategy == PoolStrategy.RECREATE else []
    keep = [m for m in live if m not in stale]
    # Under OnUse an older worker is handed out as it is; its replacement is built new.
    keep.sort(key=lambda m: (m.template != current, not m.ready, m.created), reverse=True)
    extra = keep[: max(0, len(keep) - size)]
    return Plan(create=max(0, size - len(keep)), delete=tuple(m.name for m in [*ended, *stale, *extra]))


def candidates(strategy: PoolStrategy, current: str, members: list[Member]) -> list[Member]:
    """Workers a new Session may claim, the longest-ready first."""
    usable = [
        m
        for m in members
        if m.ready
        and not m.deleting
        and not m.ended
        and (strategy == PoolStrategy.ON_USE or m.template == current)
    ]
    return sorted(usable, key=lambda m: m.created)


def status(app_name: str, size: int, members: list[Member], claimed: int) -> WarmPoolStatus:
    live = [m for m in members if not m.deleting and not m.ended]
    ready = sum(m.ready for m in live)
    return WarmPoolStatus(
        size=size, ready=ready, starting=len(live) - ready, claimed=claimed, selector=selector(app_name)
    )


def refill_pause(first_unrefilled_claim: float | None, now: float) -> float | None:
    """Seconds the pool's upkeep still waits after a claim; None: go on now. A new session's
    first call comes first: the replacement's start (a process, imports, setup) and the App's
    status write would take CPU and API time from it on the same node. Counted from the first
    claim the upkeep has not acted on, so a steady stream of claims delays a refill by
    REFILL_PAUSE at most."""
    if first_unrefilled_claim is None:
        return None
    left = REFILL_PAUSE - (now - first_unrefilled_claim)
    return left if left > 0 else None


def look_interval(app_name: str, app: AppSpec, idle_grace: int) -> float:
    """Seconds between the operator's looks at each unclaimed pool worker. A pool worker exits
    by itself when nobody looked at it for its timeout (the App's default) plus the idle grace,
    as a session's worker does when nobody culled it: after an uninstall, say."""
    return (effective_timeout(SessionSpec(app=app_name), app) + idle_grace) / LOOKS_PER_WINDOW


def looks_due(
    members: list[Member], looked_at: dict[str, float], interval: float, now: float
) -> tuple[list[str], float | None]:
    """The ready unclaimed workers to look at now (a new one at once: its first reading counts
    its setup), and the seconds until the next look is due (None: no worker to look at)."""
    due: list[str] = []
    soonest: float | None = None
    for m in members:
        if not m.ready or m.deleting or m.ended:
            continue
        left = looked_at.get(m.name, now - interval) + interval - now
        if left <= 0:
            due.append(m.name)
            left = interval
        soonest = left if soonest is None else min(soonest, left)
    return due, soonest


def claimed_at(pod: JSON | None, session_uid: str) -> str | None:
    """When the Session with this uid claimed ``pod``, if it is a pool worker it claimed."""
    annotations = (pod or {}).get("metadata", {}).get("annotations") or {}
    return annotations.get(CLAIMED_AT) if annotations.get(CLAIMED_BY) == session_uid else None


def claim_patch(member: Member, session: children.SessionRef, now: str) -> JSON:
    """The one write that makes a pool worker the Session's: its labels (the Session's Service
    selects it, the pool lets it go) and owner. The resourceVersion makes it conditional: of two
    claims of one worker, by any operator, the second gets 409 Conflict."""
    return {
        "metadata": {
            "resourceVersion": member.resource_version,
            "labels": {POOL_LABEL: None, names.SESSION_LABEL: session.name},
            "annotations": {CLAIMED_BY: session.uid, CLAIMED_AT: now},
            "ownerReferences": [children.owner_reference(session)],
        }
    }
