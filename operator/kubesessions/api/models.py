"""The `App` and `Session` resources (kubesessions.io/v1alpha1) as typed models.

They are the one source of truth: the CRD schemas in `crds/` are generated from them
(`kubesessions crds --write`), so the API server and the gateway apply the same rules.
Rules JSON Schema cannot say are CEL rules (``x-kubernetes-validations``), mirrored here
by model validators with the same messages.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from kubesessions.api.modelbase import (
    DNS1035_LABEL,
    DNS1123_LABEL,
    ENTRYPOINT,
    LABEL_VALUE,
    MIG_PROFILE,
    Quantity,
    StrictModel,
    cel,
    quantity_value,
)
from kubesessions.api.modelbase import DNS1123_SUBDOMAIN as DNS1123_SUBDOMAIN
from kubesessions.api.podfields import MAX_VOLUMES, EnvVar, PullSecret, Toleration, Volume, VolumeMount

MIN_TIMEOUT, MAX_TIMEOUT, DEFAULT_TIMEOUT = 1, 3600, 60
MAX_LIFETIME = 30 * 24 * 3600
MAX_GPUS = 16
MAX_POOL = 64
# How long a worker may take from its container's start to ready (the app's setup: a model
# load, a dataset read) before its Session fails with reason SetupTimeout.
DEFAULT_SETUP_TIMEOUT, MAX_SETUP_TIMEOUT = 600, 6 * 3600
DEFAULT_SCRATCH = "1Gi"
# Suspend: how long a suspended session is kept (seconds) and the most state it may save (bytes).
MIN_KEEP, MAX_KEEP, DEFAULT_KEEP = 60, 30 * 24 * 3600, 24 * 3600
MAX_STATE_BYTES, DEFAULT_STATE_BYTES = 10 * 1024**3, 1024**3


class Resources(StrictModel):
    """What one worker gets: GPUs (whole or a MIG slice), cpu, memory and ephemeral storage."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.gpu) && self.gpu > 0 && has(self.migProfile))",
                    "gpu and migProfile are mutually exclusive: ask for whole GPUs or for one MIG slice",
                )
            ]
        }
    )

    gpu: StrictInt | None = Field(default=None, ge=0, le=MAX_GPUS)
    """Whole GPUs (`nvidia.com/gpu`), 0..16."""
    gpuProduct: StrictStr | None = Field(default=None, max_length=63, pattern=LABEL_VALUE)
    """GPU model to run on, matched against the node label `nvidia.com/gpu.product`."""
    migProfile: StrictStr | None = Field(default=None, pattern=MIG_PROFILE, max_length=32)
    """A MIG slice such as `1g.10gb` (resource `nvidia.com/mig-<profile>`); excludes `gpu`."""
    cpu: Quantity | None = None
    """CPU request and limit, a Kubernetes quantity such as `500m` or `2`."""
    memory: Quantity | None = None
    """Memory request and limit, a Kubernetes quantity such as `8Gi`."""
    ephemeralStorage: Quantity | None = None
    """Local disk request and limit (`ephemeral-storage`: logs, the scratch volume, emptyDirs
    not in memory), a quantity such as `10Gi`; over it the kubelet evicts the worker."""

    @model_validator(mode="after")
    def _gpu_or_mig(self) -> Resources:
        if self.gpu and self.migProfile:
            raise ValueError(
                "gpu and migProfile are mutually exclusive: ask for whole GPUs or for one MIG slice"
            )
        return self

    def gpus(self) -> int:
        """GPUs held: the whole ones, or 1 for a MIG slice."""
        return 1 if self.migProfile else self.gpu or 0

    def above(self, most: Resources) -> list[str]:
        """What of these resources is more than ``most`` (a field ``most`` leaves unset: no cap)."""
        over = [f"gpu {self.gpus()} > {most.gpu}"] if most.gpu is not None and self.gpus() > most.gpu else []
        for name in ("cpu", "memory", "ephemeralStorage"):
            asked, cap = getattr(self, name), getattr(most, name)
            if cap is not None and (asked is None or quantity_value(asked) > quantity_value(cap)):
                over.append(f"{name} {asked if asked is not None else 'unlimited'} > {cap}")
        return over


class WorkerTemplate(StrictModel):
    """How a worker pod runs; every field optional so a Session can override an App's."""

    image: StrictStr | None = Field(default=None, min_length=1, max_length=512)
    """Worker container image (the kube-sessions worker runtime plus the app)."""
    entrypoint: StrictStr | None = Field(default=None, pattern=ENTRYPOINT, max_length=256)
    """The app class, `package.module:Class`, loaded by `kubesessions-worker`."""
    resources: Resources | None = None
    """GPUs, cpu and memory."""
    env: list[EnvVar] | None = Field(default=None, max_length=128)
    """Extra environment variables of the worker."""
    nodeSelector: dict[str, StrictStr] | None = None
    """Node labels the worker pod must match."""
    tolerations: list[Toleration] | None = Field(default=None, max_length=32)
    """Taints the worker pod tolerates."""
    volumes: list[Volume] | None = Field(
        default=None,
        max_length=MAX_VOLUMES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Volumes of the worker pod (at most 32): emptyDir (`medium: Memory` for `/dev/shm`),
    configMap, secret, persistentVolumeClaim, ephemeral; the worker container sees them
    through volumeMounts."""
    volumeMounts: list[VolumeMount] | None = Field(
        default=None,
        max_length=MAX_VOLUMES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["mountPath"]},
    )
    """Where the worker container sees the volumes: each names one of `volumes` (the App's or
    the Session's) at an absolute mountPath."""
    imagePullSecrets: list[PullSecret] | None = Field(default=None, max_length=16)
    """Secrets to pull the image with (`[{name: regcred}]`)."""
    serviceAccountName: StrictStr | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The worker pod's ServiceAccount (default: the namespace's `default`)."""
    automountServiceAccountToken: bool | None = None
    """Mount the ServiceAccount's API token in the worker: off unless set to true (a worker
    needs no Kubernetes API access to serve a session)."""
    setupTimeout: StrictInt | None = Field(default=None, ge=1, le=MAX_SETUP_TIMEOUT)
    """Seconds the worker may take from its container's start to ready (the app's setup)
    before the Session fails with reason SetupTimeout; 1..21600, default 600."""
    scratchSize: Quantity | None = None
    """Size limit of the worker's writable `/tmp` (an emptyDir, gone with the pod); default `1Gi`."""

    @model_validator(mode="after")
    def _unique_volumes(self) -> WorkerTemplate:
        for field, key in (("volumes", "name"), ("volumeMounts", "mountPath")):
            seen = [getattr(item, key) for item in getattr(self, field) or []]
            if len(set(seen)) != len(seen):
                raise ValueError(f"{field}: each {key} may be used once")
        return self


class Override(StrEnum):
    """A field of a Session's `spec.template` that an App may let its Sessions set."""

    IMAGE = "image"
    ENTRYPOINT = "entrypoint"
    RESOURCES = "resources"
    ENV = "env"
    NODE_SELECTOR = "nodeSelector"
    TOLERATIONS = "tolerations"
    VOLUMES = "volumes"
    VOLUME_MOUNTS = "volumeMounts"
    IMAGE_PULL_SECRETS = "imagePullSecrets"
    SERVICE_ACCOUNT_NAME = "serviceAccountName"
    AUTOMOUNT_SERVICE_ACCOUNT_TOKEN = "automountServiceAccountToken"  # noqa: S105 - a field name
    SETUP_TIMEOUT = "setupTimeout"
    SCRATCH_SIZE = "scratchSize"


# What a Session's template may only set when the user creating it holds this verb on
# sessions.kubesessions.io in the namespace: the fields that name an image, a Secret, a
# ConfigMap, a PersistentVolumeClaim, a ServiceAccount (or mount its token), a node or a
# toleration. Without the check "may create sessions" would be "may run any pod, read any
# Secret": the operator creates the worker pod with its own rights. The API server enforces it
# (the ValidatingAdmissionPolicy in crds/, generated by kubesessions.api.crds.template_policy).
TEMPLATE_VERB = "override-template"


MOUNT_MESSAGE = "volumeMounts: each name must be one of the template's volumes"


def unmounted(template: WorkerTemplate) -> list[str]:
    """The volumeMounts' names that none of ``template``'s volumes has."""
    declared = {v.name for v in template.volumes or []}
    return [m.name for m in template.volumeMounts or [] if m.name not in declared]


class PoolStrategy(StrEnum):
    RECREATE = "Recreate"
    ON_USE = "OnUse"


class WarmPool(StrictModel):
    """Workers of this App kept started, their `setup` run, for new Sessions to claim."""

    size: StrictInt = Field(default=0, ge=0, le=MAX_POOL)
    """Idle workers to keep ready, 0..64 (`kubectl scale app/<name> --replicas N` sets it)."""
    strategy: PoolStrategy = PoolStrategy.RECREATE
    """On an App change: `Recreate` replaces idle pool workers at once, `OnUse` only as they are used."""


class AppSuspend(StrictModel):
    """Suspend instead of end: an idle session's app saves its state (`suspend(dir)`) to the
    state store, its worker stops (the GPU is free), and the next call resumes it."""

    enabled: StrictBool = False
    """Suspend idle Sessions of this App instead of ending them (their app must define
    `suspend(dir)` and `resume(dir)`, and a state store must be configured)."""
    keepSeconds: StrictInt = Field(default=DEFAULT_KEEP, ge=MIN_KEEP, le=MAX_KEEP)
    """How long a suspended session is kept (seconds, 60..2592000, default 86400); then its
    state is deleted and it ends as an idle expiry does."""
    maxStateBytes: StrictInt = Field(default=DEFAULT_STATE_BYTES, ge=1, le=MAX_STATE_BYTES)
    """The most state one suspend may save (bytes, 1..10737418240, default 1073741824); more
    ends the session (reason StateTooLarge)."""


class SessionSuspend(StrictModel):
    """A Session's say on suspend: turn it off, or keep its state for less time than its App would."""

    enabled: StrictBool | None = None
    """Unset: the App's spec.suspend.enabled."""
    keepSeconds: StrictInt | None = Field(default=None, ge=MIN_KEEP, le=MAX_KEEP)
    """Seconds to keep it suspended (60..2592000); may only shorten the App's keepSeconds."""


class AppSpec(WorkerTemplate):
    """A template for workers of one kind."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.defaultSessionTimeout <= self.maxSessionTimeout",
                    "defaultSessionTimeout must be <= maxSessionTimeout",
                    ".defaultSessionTimeout",
                ),
                cel(
                    "!has(self.volumeMounts) || self.volumeMounts.all(m, "
                    "has(self.volumes) && self.volumes.exists(v, v.name == m.name))",
                    MOUNT_MESSAGE,
                    ".volumeMounts",
                ),
            ]
        }
    )

    image: StrictStr = Field(min_length=1, max_length=512)
    """Worker container image (the kube-sessions worker runtime plus the app)."""
    defaultSessionTimeout: StrictInt = Field(default=DEFAULT_TIMEOUT, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    """Idle timeout in seconds (1..3600) for Sessions that set none."""
    maxSessionTimeout: StrictInt = Field(default=MAX_TIMEOUT, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    """The longest idle timeout (seconds, 1..3600) a Session of this App may ask for."""
    warmPool: WarmPool | None = None
    """Warm workers kept ready for new Sessions of this App (none when unset)."""
    suspend: AppSuspend | None = None
    """Suspend idle Sessions instead of ending them, and resume them on the next call (off when unset)."""
    sessionMaxResources: Resources | None = None
    """The most a Session may ask for when sessionOverrides lists resources: GPUs (a MIG slice
    counts as one), cpu, memory; a field left unset is not capped."""
    sessionOverrides: list[Override] | None = Field(
        default=None,
        max_length=len(Override),
        json_schema_extra={
            "x-kubernetes-list-type": "set",
        },
    )
    """What a Session of this App may set in its `spec.template` (any of its fields: image,
    entrypoint, resources, env, nodeSelector, tolerations, volumes, volumeMounts, ...); none by
    default: such a Session chooses only its config, sessionTimeout (up to maxSessionTimeout)
    and maxLifetime. A template's image, env from a Secret or ConfigMap, volume of a Secret,
    ConfigMap or PersistentVolumeClaim, imagePullSecrets, serviceAccountName, a mounted
    ServiceAccount token, nodeSelector and tolerations also need the caller's
    `override-template` right."""

    @model_validator(mode="after")
    def _default_within_max(self) -> AppSpec:
        if self.defaultSessionTimeout > self.maxSessionTimeout:
            raise ValueError("defaultSessionTimeout must be <= maxSessionTimeout")
        if self.sessionOverrides is not None and len(set(self.sessionOverrides)) != len(
            self.sessionOverrides
        ):
            raise ValueError("sessionOverrides: each field may be listed once")
        if unknown := unmounted(self):
            raise ValueError(f"{MOUNT_MESSAGE} (not declared: {', '.join(unknown)})")
        return self

    def refused_overrides(self, template: WorkerTemplate | None) -> list[str]:
        """The fields ``template`` sets that this App does not let its Sessions override."""
        allowed = set(self.sessionOverrides or ())
        set_fields = template.model_dump(exclude_none=True) if template else {}
        return [f for f in set_fields if Override(f) not in allowed]


class SessionSpec(StrictModel):
    """One client's session on one warm worker."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.app) || (has(self.template) && has(self.template.image))",
                    "spec.app or spec.template.image is required",
                ),
                cel(
                    "!has(self.maxLifetime) || !has(self.sessionTimeout) || self.maxLifetime >= self.sessionTimeout",
                    "maxLifetime must be >= sessionTimeout",
                    ".maxLifetime",
                ),
                cel("has(self.app) == has(oldSelf.app)", "spec.app is immutable", ".app"),
                cel("has(self.template) == has(oldSelf.template)", "spec.template is immutable", ".template"),
            ]
        }
    )

    app: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
        json_schema_extra={"x-kubernetes-validations": [cel("self == oldSelf", "spec.app is immutable")]},
    )
    """Name of an App in the same namespace to start the worker from."""
    template: WorkerTemplate | None = Field(
        default=None,
        json_schema_extra={
            "x-kubernetes-validations": [cel("self == oldSelf", "spec.template is immutable")]
        },
    )
    """Inline worker settings; they override the App's, or stand alone without an App."""
    sessionTimeout: StrictInt | None = Field(default=None, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    """Idle timeout in whole seconds, 1..3600: the session ends this long after its last call.
    Unset: the App's defaultSessionTimeout, else 60."""
    maxLifetime: StrictInt | None = Field(default=None, ge=MIN_TIMEOUT, le=MAX_LIFETIME)
    """Absolute cap in seconds from start, even while busy; must be >= sessionTimeout."""
    config: dict[str, Any] | None = None
    """Free-form settings handed to the app's `setup(config)`."""
    suspend: SessionSuspend | None = None
    """Override the App's spec.suspend: turn it off (enabled: false) or shorten keepSeconds."""

    @model_validator(mode="after")
    def _cross_field(self) -> SessionSpec:
        if self.app is None and (self.template is None or self.template.image is None):
            raise ValueError("spec.app or spec.template.image is required")
        if (
            self.maxLifetime is not None
            and self.sessionTimeout is not None
            and self.maxLifetime < self.sessionTimeout
        ):
            raise ValueError("maxLifetime must be >= sessionTimeout")
        return self


class Phase(StrEnum):
    PENDING = "Pending"
    STARTING = "Starting"
    READY = "Ready"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RESUMING = "Resuming"
    CLOSED = "Closed"
    EXPIRED = "Expired"
    FAILED = "Failed"


FINISHED_PHASES = frozenset({Phase.CLOSED, Phase.EXPIRED, Phase.FAILED})


class Condition(BaseModel):
    """A status condition (metav1.Condition shape)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    type: str
    """E.g. Ready, Scheduled, WorkerUnreachable."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = ""
    """A CamelCase reason such as Unschedulable, SetupFailed, IdleTimeout."""
    message: str = ""
    """What happened, for people."""
    lastTransitionTime: str | None = None
    """When status last changed (RFC 3339)."""
    observedGeneration: int | None = None
    """The spec generation the condition was computed from."""


class GpuSummary(BaseModel):
    """What GPUs the worker asked for."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    requested: int = 0
    """GPUs requested: whole GPUs, or 1 for a MIG slice (see migProfile)."""
    product: str = ""
    """Requested GPU product, if any."""
    migProfile: str = ""
    """Requested MIG slice, if any."""


class GpuSeconds(BaseModel):
    """GPU-seconds the session has held: its GPUs times the seconds its worker ran."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    held: float = 0.0
    """Starting plus busy plus idle."""
    starting: float = 0.0
    """Until the app's setup was done."""
    busy: float = 0.0
    """With a call in flight."""
    idle: float = 0.0
    """Ready without a call in flight."""
    busyPercent: int = 0
    """Busy as a share of held, 0-100."""


class Suspension(BaseModel):
    """The saved state of a suspended session (kept while it is Suspended or Resuming)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    suspendedAt: str | None = None
    """When the state was saved and the worker stopped."""
    expiresAt: str | None = None
    """When the state is deleted and the session ends, unless resumed (a keepalive moves it)."""
    bytes: int | None = None
    """Size of the saved state (tar)."""
    sha256: str | None = None
    """Checksum of the saved state, checked before the app's resume sees it."""
    seconds: float | None = None
    """How long the app's suspend and the upload took."""
    key: str | None = None
    """The state's object key in the state store."""


class StartedFrom(StrEnum):
    POOL = "pool"
    COLD = "cold"


class SessionStatus(BaseModel):
    """Where the session stands; written by the operator only."""

    model_config = ConfigDict(
        use_attribute_docstrings=True,
        extra="forbid",
    )

    phase: Phase | None = None
    """Pending, Starting, Ready, Closed, Expired or Failed."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready and friends, each with reason, message and observedGeneration."""
    reason: str | None = None
    """Why the session is in its phase, CamelCase (e.g. Unschedulable, IdleTimeout, SetupFailed)."""
    message: str | None = None
    """The same for people."""
    sessionTimeout: int | None = None
    """The idle timeout in force (spec, else the App's default, else 60)."""
    podName: str | None = None
    """The worker pod."""
    podIP: str | None = None
    """The worker pod's IP (recorded with the next phase change, Ready at the latest)."""
    endpoint: str | None = None
    """In-cluster URL of the session's Service."""
    startedAt: str | None = None
    """When the worker pod started (recorded like podIP)."""
    readyAt: str | None = None
    """When the session was announced Ready: its idle clock starts here at the earliest."""
    startedFrom: StartedFrom | None = None
    """`pool`: it claimed a warm worker of its App's pool; `cold`: a worker started for it."""
    claimedAt: str | None = None
    """When it claimed its pool worker (pool starts only)."""
    lastActivityTime: str | None = None
    """Last call start or end, or keepalive (RFC 3339, ms)."""
    idleSince: str | None = None
    """lastActivityTime while the session runs, gone once it ends (kubectl's idle column)."""
    expiresAt: str | None = None
    """When the session ends if idle until then."""
    endedAt: str | None = None
    """When the session finished (Closed, Expired or Failed)."""
    calls: int | None = None
    """Calls served so far."""
    gpus: GpuSummary | None = None
    """GPUs asked for and seen."""
    gpuSeconds: GpuSeconds | None = None
    """GPU-seconds held, busy and idle (recorded with activity writes and at the end)."""
    suspension: Suspension | None = None
    """The saved state while Suspended or Resuming."""
    observedGeneration: int | None = None
    """The spec generation this status describes."""
    kopf: dict[str, Any] | None = None
    """Reserved for the kopf framework's own bookkeeping."""


class WarmPoolStatus(BaseModel):
    """The App's warm pool as the operator last counted it."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    size: int = 0
    """The pool size in force (spec.warmPool.size)."""
    ready: int = 0
    """Pool workers ready to be claimed."""
    starting: int = 0
    """Pool workers still starting (their setup running)."""
    claimed: int = 0
    """Workers Sessions have claimed from the pool so far (a running total)."""
    selector: str = ""
    """Label selector of the pool's workers (for the scale subresource, HPA, KEDA)."""


class AppStatus(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    warmPool: WarmPoolStatus | None = None
    """The warm pool's workers: ready, starting, claimed."""
    conditions: list[Condition] | None = None
    """SuspendAvailable: whether idle Sessions can be suspended (spec.suspend.enabled, a state
    store configured, an app with suspend and resume)."""
    observedGeneration: int | None = None
    """The spec generation last seen."""
    kopf: dict[str, Any] | None = None
    """Reserved for the kopf framework's own bookkeeping."""


class _Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    apiVersion: Literal["kubesessions.io/v1alpha1"] = "kubesessions.io/v1alpha1"
    metadata: dict[str, Any] = Field(default_factory=dict)


class App(_Resource):
    kind: Literal["App"] = "App"
    spec: AppSpec
    status: AppStatus | None = None


# A Session's Service is named after it, so its name must be one a Service can have; the Pod,
# the `<name>-token` Secret (69 characters at most) and the label values take it too.
SESSION_NAME_MESSAGE = (
    "metadata.name: a Session's name must be a DNS-1035 label, as its Service is named after it: "
    "at most 63 characters, lower-case letters, digits and '-', starting with a letter and ending "
    "with a letter or digit"
)
SESSION_NAME_RULE = cel(
    f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS1035_LABEL}')",
    SESSION_NAME_MESSAGE,
    reason="FieldValueInvalid",
)


class Session(_Resource):
    kind: Literal["Session"] = "Session"
    spec: SessionSpec
    status: SessionStatus | None = None

    @model_validator(mode="after")
    def _name_fits_a_service(self) -> Session:
        name = self.metadata.get("name")
        if name is not None and not (len(name) <= 63 and re.fullmatch(DNS1035_LABEL, name)):
            raise ValueError(SESSION_NAME_MESSAGE)
        return self


def is_dns1123_subdomain(name: str) -> bool:
    return len(name) <= 253 and re.fullmatch(DNS1123_SUBDOMAIN, name) is not None


def is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and re.fullmatch(DNS1123_LABEL, name) is not None


def effective_suspend(spec: SessionSpec, app: AppSpec | None) -> AppSuspend | None:
    """The suspend settings in force (None: off): the App's, turned off or kept shorter by the Session."""
    if app is None or app.suspend is None or not app.suspend.enabled:
        return None
    own = spec.suspend or SessionSuspend()
    if own.enabled is False:
        return None
    keep = (
        app.suspend.keepSeconds if own.keepSeconds is None else min(own.keepSeconds, app.suspend.keepSeconds)
    )
    return app.suspend.model_copy(update={"keepSeconds": keep})


def effective_timeout(spec: SessionSpec, app: AppSpec | None) -> int:
    """The idle timeout in force: the Session's, else the App's default, else 60 s."""
    if spec.sessionTimeout is not None:
        return spec.sessionTimeout
    return app.defaultSessionTimeout if app is not None else DEFAULT_TIMEOUT
