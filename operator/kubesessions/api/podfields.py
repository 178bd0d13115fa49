"""The core/v1 shapes a worker template embeds (env vars and their sources, tolerations),
checked as the API server checks them."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, StrictInt, StrictStr, model_validator

from kubesessions.api.modelbase import ENV_NAME, Quantity, StrictModel, cel


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
