"""The core/v1 shapes a worker template embeds (env vars and their sources, tolerations, volumes),
checked as the API server checks them."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictInt, StrictStr, model_validator

from kubesessions.api.modelbase import DNS1123_LABEL, DNS1123_SUBDOMAIN, ENV_NAME, Quantity, StrictModel, cel


class KeyRef(StrictModel):
    """A key of a Secret or ConfigMap in the Session's namespace."""

    name: StrictStr = Field(min_length=1, max_length=253)
    """Name of the Secret or ConfigMap."""
    key: StrictStr = Field(min_length=1, max_length=253)
    """The key to read."""
    optional: bool | None = None
    """Whether the object or key may be missing."""


class FieldRef(StrictModel):
    """A field of the worker pod (downward API)."""

    fieldPath: StrictStr = Field(min_length=1)
    """Path of the field, e.g. `metadata.name` or `status.podIP`."""
    apiVersion: StrictStr | None = None
    """Version of the schema the path is written in (default `v1`)."""


class ResourceFieldRef(StrictModel):
    """A resource limit or request of the worker container."""

    resource: StrictStr = Field(min_length=1)
    """E.g. `limits.memory`."""
    containerName: StrictStr | None = None
    """Defaults to the worker container."""
    divisor: Quantity | None = None
    """Unit of the value (default `1`)."""


class EnvVarSource(StrictModel):
    """Where an env var's value comes from (exactly one source)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), "
                    "has(self.resourceFieldRef)].filter(x, x).size() == 1",
                    "exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
                )
            ]
        }
    )

    secretKeyRef: KeyRef | None = None
    """A key of a Secret."""
    configMapKeyRef: KeyRef | None = None
    """A key of a ConfigMap."""
    fieldRef: FieldRef | None = None
    """A field of the pod."""
    resourceFieldRef: ResourceFieldRef | None = None
    """A resource of the container."""

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        chosen = [self.secretKeyRef, self.configMapKeyRef, self.fieldRef, self.resourceFieldRef]
        if sum(x is not None for x in chosen) != 1:
            raise ValueError("exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef")
        return self


class EnvVar(StrictModel):
    """An environment variable of the worker (core/v1 EnvVar)."""

    name: StrictStr = Field(min_length=1, max_length=256, pattern=ENV_NAME)
    """Variable name."""
    value: StrictStr | None = None
    """Literal value; `$(VAR)` references are expanded."""
    valueFrom: EnvVarSource | None = None
    """Take the value from a Secret, ConfigMap or the pod."""


class Toleration(StrictModel):
    """A core/v1 Toleration for the worker pod."""

    key: StrictStr | None = Field(default=None, max_length=316)
    """Taint key; empty with operator Exists matches all."""
    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (default Equal)."""
    value: StrictStr | None = Field(default=None, max_length=63)
    """Taint value for Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all."""
    tolerationSeconds: StrictInt | None = None
    """How long a NoExecute taint is tolerated."""


# Small bounds keep the CEL rules' estimated cost within what the API server allows a CRD.
MAX_VOLUMES, MAX_ITEMS, MAX_PATH = 32, 32, 253
_CLIMBS = "(^|/)[.][.](/|$)"  # no backslashes: CEL strings have no `\.` escape
_RELATIVE_MESSAGE = "must be a relative path without '..'"


def _stays_inside(path: str) -> str:
    if re.search(_CLIMBS, path):
        raise ValueError(_RELATIVE_MESSAGE)
    return path


# A path inside a volume or below a mount: relative, and never climbing out with `..` (the
# schema's patterns are RE2, which has no lookahead: the `..` test is a CEL rule).
RelativePath = Annotated[
    StrictStr,
    Field(
        min_length=1,
        max_length=MAX_PATH,
        pattern=r"^[^/]",
        json_schema_extra={
            "x-kubernetes-validations": [cel(f"!self.matches('{_CLIMBS}')", _RELATIVE_MESSAGE)]
        },
    ),
    AfterValidator(_stays_inside),
]
ABSOLUTE_PATH = r"^/"
MODE_MAX = 0o777


class KeyToPath(StrictModel):
    """One key of a ConfigMap or Secret written as a file of the volume."""

    key: StrictStr = Field(min_length=1, max_length=253)
    """The key to write."""
    path: RelativePath
    """The file's path inside the volume: relative, without `..`."""
    mode: StrictInt | None = Field(default=None, ge=0, le=MODE_MAX)
    """File mode bits (0..0777, decimal in JSON: 0644 is 420)."""


class EmptyDirVolume(StrictModel):
    """A directory that starts empty and is deleted with the pod."""

    medium: Literal["", "Memory"] | None = None
    """`Memory`: a tmpfs, counted against the worker's memory limit (use it for `/dev/shm`)."""
    sizeLimit: Quantity | None = None
    """The most it may hold, e.g. `1Gi`; over it the pod is evicted."""


class ConfigMapVolume(StrictModel):
    """A ConfigMap's keys as files."""

    name: StrictStr = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The ConfigMap, in the Session's namespace."""
    items: list[KeyToPath] | None = Field(default=None, max_length=MAX_ITEMS)
    """Only these keys, at these paths (default: every key, at its own name)."""
    defaultMode: StrictInt | None = Field(default=None, ge=0, le=MODE_MAX)
    """Mode bits of the files (0..0777, default 0644)."""
    optional: bool | None = None
    """Whether the ConfigMap may be missing."""


class SecretVolume(StrictModel):
    """A Secret's keys as files."""

    secretName: StrictStr = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The Secret, in the Session's namespace."""
    items: list[KeyToPath] | None = Field(default=None, max_length=MAX_ITEMS)
    """Only these keys, at these paths (default: every key, at its own name)."""
    defaultMode: StrictInt | None = Field(default=None, ge=0, le=MODE_MAX)
    """Mode bits of the files (0..0777, default 0644)."""
    optional: bool | None = None
    """Whether the Secret may be missing."""


class ClaimVolume(StrictModel):
    """An existing PersistentVolumeClaim (a model cache, a dataset)."""

    claimName: StrictStr = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The claim, in the Session's namespace."""
    readOnly: bool | None = None
    """Mount it read-only."""


class ClaimRequests(StrictModel):
    storage: Quantity
    """Size of the volume, e.g. `20Gi`."""


class ClaimResources(StrictModel):
    requests: ClaimRequests
    """What the claim asks for."""


class ClaimSpec(StrictModel):
    """The PersistentVolumeClaim made for each worker pod (and deleted with it)."""

    accessModes: list[Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany", "ReadWriteMany"]] = Field(
        min_length=1, max_length=4
    )
    """E.g. `[ReadWriteOnce]`."""
    storageClassName: StrictStr | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The StorageClass (default: the cluster's default class)."""
    resources: ClaimResources
    """`requests.storage`: the size."""


class ClaimTemplate(StrictModel):
    spec: ClaimSpec
    """The claim's spec."""


class EphemeralVolume(StrictModel):
    """A volume from a StorageClass, made for the pod and deleted with it."""

    volumeClaimTemplate: ClaimTemplate
    """The claim to make for each worker pod."""


VOLUME_SOURCES = ("emptyDir", "configMap", "secret", "persistentVolumeClaim", "ephemeral")
SCRATCH_VOLUME = "scratch"  # the worker's /tmp (spec.scratchSize), made by the operator
SCRATCH_PATH = "/tmp"  # noqa: S108 - the scratch volume's mount, the worker's only writable place


class Volume(StrictModel):
    """A volume of the worker pod (a safe subset of core/v1 Volume): exactly one source."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "[" + ", ".join(f"has(self.{s})" for s in VOLUME_SOURCES) + "].filter(x, x).size() == 1",
                    "a volume has exactly one of " + ", ".join(VOLUME_SOURCES),
                ),
                cel(
                    f"self.name != '{SCRATCH_VOLUME}'",
                    f"volume name {SCRATCH_VOLUME!r} is the worker's /tmp: set scratchSize instead",
                    ".name",
                ),
            ]
        }
    )

    name: StrictStr = Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Name the worker's volumeMounts use: a DNS-1123 label."""
    emptyDir: EmptyDirVolume | None = None
    """A directory that starts empty, deleted with the pod (`medium: Memory` for `/dev/shm`)."""
    configMap: ConfigMapVolume | None = None
    """A ConfigMap's keys as files."""
    secret: SecretVolume | None = None
    """A Secret's keys as files."""
    persistentVolumeClaim: ClaimVolume | None = None
    """An existing PersistentVolumeClaim."""
    ephemeral: EphemeralVolume | None = None
    """A claim made for the pod from a StorageClass and deleted with it."""

    @model_validator(mode="after")
    def _one_source(self) -> Volume:
        if sum(getattr(self, s) is not None for s in VOLUME_SOURCES) != 1:
            raise ValueError("a volume has exactly one of " + ", ".join(VOLUME_SOURCES))
        if self.name == SCRATCH_VOLUME:
            raise ValueError(f"volume name {SCRATCH_VOLUME!r} is the worker's /tmp: set scratchSize instead")
        return self


class VolumeMount(StrictModel):
    """Where the worker container sees one of the pod's volumes."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.mountPath != '{SCRATCH_PATH}'",
                    f"mountPath {SCRATCH_PATH} is the worker's scratch volume: set scratchSize instead",
                    ".mountPath",
                )
            ]
        }
    )

    name: StrictStr = Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """A volume of the template's `volumes`."""
    mountPath: StrictStr = Field(min_length=2, max_length=MAX_PATH, pattern=ABSOLUTE_PATH)
    """Where it appears in the container: an absolute path (not `/tmp`, the scratch volume's)."""
    readOnly: bool | None = None
    """Mount it read-only."""
    subPath: RelativePath | None = None
    """Mount only this path inside the volume: relative, without `..`."""

    @model_validator(mode="after")
    def _not_scratch(self) -> VolumeMount:
        if self.mountPath.rstrip("/") == SCRATCH_PATH:
            raise ValueError(
                f"mountPath {SCRATCH_PATH} is the worker's scratch volume: set scratchSize instead"
            )
        return self


class PullSecret(StrictModel):
    """A Secret of type `kubernetes.io/dockerconfigjson` to pull the image with."""

    name: StrictStr = Field(min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The Secret, in the Session's namespace."""
