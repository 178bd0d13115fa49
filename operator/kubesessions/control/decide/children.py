"""Pure builders: App + Session -> the worker Pod, Service and token Secret (no API calls)."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field

from kubesessions.api import tokens
from kubesessions.api.models import (
    DEFAULT_SCRATCH,
    DEFAULT_SETUP_TIMEOUT,
    MOUNT_MESSAGE,
    AppSpec,
    GpuSummary,
    Resources,
    SessionSpec,
    WorkerTemplate,
    effective_timeout,
    unmounted,
)
from kubesessions.api.names import (
    API_VERSION,
    APP_LABEL,
    CLIENT_LABEL,
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    JSON,
    MANAGED_BY,
    MANAGER,
    SESSION_LABEL,
    SETUP_TIMEOUT_ANNOTATION,
    TOKEN_KEY,
    WORKER_CONTAINER,
    WORKER_POLICY,
    WORKER_PORT,
)
from kubesessions.api.podfields import SCRATCH_PATH, SCRATCH_VOLUME
from kubesessions.common.timefmt import rfc3339

WORKER_UID = 10001
INLINE_APP = "inline"


class SpecError(ValueError):
    """The Session cannot be run as specified (reported as phase Failed, reason InvalidSpec)."""


@dataclass(frozen=True)
class SessionRef:
    """What the children need to know of their Session."""

    name: str
    namespace: str
    uid: str


def token_secret_name(session: str) -> str:
    return f"{session}-token"


KINDS = {"pods": "Pod", "services": "Service", "secrets": "Secret"}


def owned_by(obj: JSON | None, uid: str) -> bool:
    """Whether ``obj`` names ``uid`` among its owners: what makes an object ours to adopt, change
    or delete (a name alone never does: anyone may have made an object of that name)."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def passing(found: JSON, owner: JSON) -> bool:
    """Whether ``found``, holding a name that a child of ``owner`` needs, is on its way out: being
    deleted, or the child of an earlier owner of the same kind and name, which is gone (a name
    is one object's at a time), so the garbage collector deletes it."""
    refs = found["metadata"].get("ownerReferences") or []
    return bool(found["metadata"].get("deletionTimestamp")) or any(
        (ref.get("kind"), ref.get("name")) == (owner["kind"], owner["name"])
        and ref.get("uid") != owner["uid"]
        for ref in refs
    )


def name_conflict(resource: str, found: JSON, owner: JSON) -> str:
    """Why ``found`` (of ``resource``), holding the name a child of ``owner`` (an ownerReference)
    needs, is left alone."""
    meta = found["metadata"]
    holders = ", ".join(
        f'{ref.get("kind")} "{ref.get("name")}" (uid {ref.get("uid")})'
        for ref in meta.get("ownerReferences") or []
    )
    return (
        f'{KINDS.get(resource, resource)} "{meta["name"]}" already exists in namespace {meta.get("namespace")} '
        f"and is not this {owner['kind']}'s (owned by {holders or 'nobody: made by hand or another tool'})"
    )


def merge_template(app: AppSpec | None, override: WorkerTemplate | None) -> WorkerTemplate:
    """The App's worker settings with the Session's on top (Session wins, field by field)."""
    base = (
        WorkerTemplate.model_validate(app.model_dump(include=set(WorkerTemplate.model_fields)))
        if app
        else None
    )
    if base is None:
        return override or WorkerTemplate()
    if override is None:
        return base
    resources = None
    if base.resources or override.resources:
        merged = {**_set_fields(base.resources), **_set_fields(override.resources)}
        if override.resources and override.resources.migProfile:
            merged.pop("gpu", None)  # a MIG slice replaces the App's whole GPUs
        if override.resources and override.resources.gpu:
            merged.pop("migProfile", None)
        resources = Resources.model_validate(merged)
    env = {e.name: e for e in base.env or []}
    env.update({e.name: e for e in override.env or []})
    # Lists keyed like the pod's: a Session's volume (or mount, or pull secret) replaces the
    # App's of the same name (mount path), the rest add up.
    volumes = {v.name: v for v in [*(base.volumes or []), *(override.volumes or [])]}
    mounts = {m.mountPath: m for m in [*(base.volumeMounts or []), *(override.volumeMounts or [])]}
    pulls = {p.name: p for p in [*(base.imagePullSecrets or []), *(override.imagePullSecrets or [])]}
    scalars = ("serviceAccountName", "automountServiceAccountToken", "setupTimeout", "scratchSize")
    return WorkerTemplate(
        image=override.image or base.image,
        entrypoint=override.entrypoint or base.entrypoint,
        resources=resources,
        env=list(env.values()) or None,
        nodeSelector={**(base.nodeSelector or {}), **(override.nodeSelector or {})} or None,
        tolerations=[*(base.tolerations or []), *(override.tolerations or [])] or None,
        volumes=list(volumes.values()) or None,
        volumeMounts=list(mounts.values()) or None,
        imagePullSecrets=list(pulls.values()) or None,
        **{
            name: getattr(override, name) if getattr(override, name) is not None else getattr(base, name)
            for name in scalars
        },
    )


def _set_fields(resources: Resources | None) -> JSON:
    return resources.model_dump(exclude_none=True) if resources else {}


def labels(ref: SessionRef, app_name: str | None) -> dict[str, str]:
    return {MANAGED_BY: MANAGER, SESSION_LABEL: ref.name, APP_LABEL: app_name or INLINE_APP}


def owner_reference(ref: SessionRef) -> JSON:
    return {
        "apiVersion": API_VERSION,
        "kind": "Session",
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(name: str, ref: SessionRef, app_name: str | None) -> JSON:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": labels(ref, app_name),
        "ownerReferences": [owner_reference(ref)],
    }


def new_token() -> str:
    return secrets.token_urlsafe(32)


def session_token(key: bytes, ref: SessionRef) -> str:
    """The Session's token, derived from the key the operator and the gateway share."""
    return tokens.session_token(key, ref.namespace, ref.name, ref.uid)


def build_secret(ref: SessionRef, app_name: str | None, token: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(token_secret_name(ref.name), ref, app_name),
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }


def build_service(ref: SessionRef, app_name: str | None) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ref.name, ref, app_name),
        "spec": {
            # Headless: the name resolves straight to the one pod, and thousands of sessions
            # use up no ClusterIPs (allocating one is also the slowest part of creating it).
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": {MANAGED_BY: MANAGER, SESSION_LABEL: ref.name},
            "ports": [{"name": "http", "port": WORKER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def endpoint(ref: SessionRef) -> str:
    return f"http://{ref.name}.{ref.namespace}.svc:{WORKER_PORT}"


def gpu_limits(resources: Resources | None) -> dict[str, str]:
    if resources is None:
        return {}
    if resources.migProfile:
        return {f"nvidia.com/mig-{resources.migProfile}": "1"}
    if resources.gpu:
        return {GPU_RESOURCE: str(resources.gpu)}
    return {}


# Resources field -> the container's resource name (requested and limited alike).
PLAIN_RESOURCES = {"cpu": "cpu", "memory": "memory", "ephemeralStorage": "ephemeral-storage"}


def _container_resources(resources: Resources | None) -> JSON:
    plain = {
        name: str(getattr(resources, field))
        for field, name in PLAIN_RESOURCES.items()
        if resources and getattr(resources, field) is not None
    }
    limits = {**plain, **gpu_limits(resources)}
    out: JSON = {}
    if plain:
        out["requests"] = dict(plain)
    if limits:
        out["limits"] = limits
    return out


def build_pod(
    ref: SessionRef,
    app_name: str | None,
    app: AppSpec | None,
    spec: SessionSpec,
    *,
    termination_grace: int = 30,
    idle_grace: int = 60,
) -> JSON:
    """The worker pod: restricted, token-less, never restarted, GPU-limited as asked."""
    if app is not None and (refused := app.refused_overrides(spec.template)):
        allowed = ", ".join(app.sessionOverrides or ()) or "nothing"
        raise SpecError(
            f"spec.template sets {', '.join(refused)}, which App {app_name} does not let its Sessions "
            f"override (its spec.sessionOverrides allows: {allowed})"
        )
    template = merge_template(app, spec.template)
    most = app.sessionMaxResources if app is not None else None
    asked = template.resources if spec.template and spec.template.resources else None
    if most is not None and asked is not None and (over := asked.above(most)):
        raise SpecError(
            f"spec.template.resources asks for more than App {app_name} allows a Session "
            f"(spec.sessionMaxResources): {', '.join(over)}"
        )
    if not template.image:
        raise SpecError("no worker image: the Session names no App and its template sets no image")
    if not template.entrypoint:
        raise SpecError("no entrypoint: set spec.entrypoint on the App or spec.template.entrypoint")
    if missing := unmounted(template):
        raise SpecError(f"{MOUNT_MESSAGE}, the App's or the Session's (not declared: {', '.join(missing)})")
    timeout = effective_timeout(spec, app)
    if app is not None and timeout > app.maxSessionTimeout:
        raise SpecError(
            f"sessionTimeout {timeout} is above the App's maxSessionTimeout {app.maxSessionTimeout}"
        )
    keep = spec.suspend.keepSeconds if spec.suspend else None
    if app is not None and app.suspend is not None and keep is not None and keep > app.suspend.keepSeconds:
        raise SpecError(
            f"spec.suspend.keepSeconds {keep} is above the App's spec.suspend.keepSeconds "
            f"{app.suspend.keepSeconds}: a Session may only keep its state for less time"
        )
    if spec.maxLifetime is not None and spec.maxLifetime < timeout:
        raise SpecError(f"maxLifetime {spec.maxLifetime} is below the sessionTimeout in force ({timeout})")
    env: list[JSON] = [
        {"name": "SESSION_ID", "value": ref.name},
        {"name": "SESSION_TIMEOUT", "value": str(timeout)},
        {"name": "KUBESESSIONS_APP", "value": template.entrypoint},
        {"name": "KUBESESSIONS_CONFIG", "value": json.dumps(spec.config or {}, separators=(",", ":"))},
        {
            "name": "KUBESESSIONS_SESSION_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(ref.name), "key": TOKEN_KEY}},
        },
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KUBESESSIONS_PORT", "value": str(WORKER_PORT)},
        # The worker's own safety net: it exits if nobody culled it by timeout + grace.
        {"name": "KUBESESSIONS_IDLE_GRACE", "value": str(idle_grace)},
        {"name": "TMPDIR", "value": SCRATCH_PATH},  # an emptyDir, the only writable place
    ]
    reserved = {e["name"] for e in env}
    env += [e.model_dump(exclude_none=True) for e in template.env or [] if e.name not in reserved]
    node_selector = dict(template.nodeSelector or {})
    resources = template.resources
    if resources and resources.gpuProduct:
        node_selector[GPU_PRODUCT_LABEL] = resources.gpuProduct
    tolerations = [t.model_dump(exclude_none=True) for t in template.tolerations or []]
    if gpu_limits(resources):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    probe = {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 3}
    scratch = {
        "name": SCRATCH_VOLUME,
        "emptyDir": {"sizeLimit": str(template.scratchSize or DEFAULT_SCRATCH)},
    }
    pod_spec: JSON = {
        "restartPolicy": "Never",
        # No API token unless the template asks for one in so many words: a worker serves
        # sessions, it needs no Kubernetes API (docs/security.md).
        "automountServiceAccountToken": template.automountServiceAccountToken is True,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [scratch, *(v.model_dump(exclude_none=True) for v in template.volumes or [])],
        "containers": [
            {
                "name": WORKER_CONTAINER,
                "image": template.image,
                "env": env,
                "ports": [{"name": "http", "containerPort": WORKER_PORT, "protocol": "TCP"}],
                "readinessProbe": probe,
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http"},
                    "periodSeconds": 10,
                    "failureThreshold": 6,
                },
                "resources": _container_resources(resources),
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [
                    {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_PATH},
                    *(m.model_dump(exclude_none=True) for m in template.volumeMounts or []),
                ],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }
        ],
    }
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if template.imagePullSecrets:
        pod_spec["imagePullSecrets"] = [p.model_dump() for p in template.imagePullSecrets]
    if template.serviceAccountName:
        pod_spec["serviceAccountName"] = template.serviceAccountName
    metadata = _metadata(ref.name, ref, app_name)
    # The operator fails a worker that is not ready this long after its container started.
    setup_timeout = template.setupTimeout or DEFAULT_SETUP_TIMEOUT
    metadata["annotations"] = {SETUP_TIMEOUT_ANNOTATION: str(setup_timeout)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def build_event(kind: str, meta: JSON, type_: str, reason: str, message: str) -> JSON:
    """A core/v1 Event about one of our objects (``meta``: its metadata)."""
    now = rfc3339(precision="seconds")
    return {
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "kube-sessions-operator"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def gpu_summary(app: AppSpec | None, spec: SessionSpec) -> GpuSummary:
    resources = merge_template(app, spec.template).resources
    return GpuSummary(
        requested=resources.gpus() if resources else 0,
        product=(resources.gpuProduct or "") if resources else "",
        migProfile=(resources.migProfile or "") if resources else "",
    )


@dataclass(frozen=True)
class PolicyPeers:
    """Who may reach workers: the gateway and operator pods of one install (the chart's labels),
    and pods in the worker's namespace that carry the client label."""

    namespace: str  # where the gateway and operator run
    instance: str | None = None  # their app.kubernetes.io/instance (the Helm release); None: any
    client_label: tuple[str, str] = CLIENT_LABEL
    egress: list[JSON] = field(default_factory=list)  # worker egress rules beyond DNS


def build_network_policy(namespace: str, peers: PolicyPeers) -> JSON:
    """One per namespace with sessions: workers take calls only from the peers, and reach DNS
    plus the egress rules given."""
    own = {"app.kubernetes.io/name": MANAGER}
    if peers.instance:
        own["app.kubernetes.io/instance"] = peers.instance
    gateway_or_operator = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": peers.namespace}},
        "podSelector": {
            "matchLabels": own,
            "matchExpressions": [
                {"key": "app.kubernetes.io/component", "operator": "In", "values": ["gateway", "operator"]}
            ],
        },
    }
    clients = {"podSelector": {"matchLabels": dict([peers.client_label])}}
    dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": WORKER_POLICY, "namespace": namespace, "labels": {MANAGED_BY: MANAGER}},
        "spec": {
            "podSelector": {"matchLabels": {MANAGED_BY: MANAGER}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [gateway_or_operator, clients],
                    "ports": [{"port": WORKER_PORT, "protocol": "TCP"}],
                }
            ],
            "egress": [{"ports": dns}, *peers.egress],
        },
    }
