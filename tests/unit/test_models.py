from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kubesessions.api import models, podfields

from ..validation_cases import BAD, GOOD, Case, examples

pytestmark = pytest.mark.unit


def validate(manifest: dict[str, Any]) -> None:
    model = models.Session if manifest["kind"] == "Session" else models.App
    model.model_validate(manifest)


@pytest.mark.parametrize("case", examples() + GOOD, ids=lambda c: c.id)
def test_valid_manifests_pass_the_models(case: Case) -> None:
    validate(case.manifest)


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_manifests_fail_the_models_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as err:
        validate(case.manifest)
    assert case.field and case.field in str(err.value)


def test_defaults_are_applied() -> None:
    spec = models.SessionSpec.model_validate({"app": "x"})
    app = models.AppSpec.model_validate({"image": "i"})
    assert (app.defaultSessionTimeout, app.maxSessionTimeout) == (60, 3600)
    assert models.effective_timeout(spec, None) == models.DEFAULT_TIMEOUT == 60
    assert models.effective_timeout(spec, app.model_copy(update={"defaultSessionTimeout": 90})) == 90
    own = models.SessionSpec.model_validate({"app": "x", "sessionTimeout": 5})
    assert models.effective_timeout(own, app) == 5


def test_every_field_is_documented() -> None:
    def walk(model: type[models.BaseModel]) -> list[str]:
        missing = []
        for name, info in model.model_fields.items():
            if not info.description and name not in ("apiVersion", "kind", "metadata", "spec", "status"):
                missing.append(f"{model.__name__}.{name}")
        return missing

    classes = [
        models.SessionSpec,
        models.AppSpec,
        models.WorkerTemplate,
        models.Resources,
        podfields.EnvVar,
        podfields.EnvVarSource,
        podfields.KeyRef,
        podfields.FieldRef,
        podfields.ResourceFieldRef,
        podfields.Toleration,
        podfields.Volume,
        podfields.VolumeMount,
        podfields.EmptyDirVolume,
        podfields.ConfigMapVolume,
        podfields.SecretVolume,
        podfields.KeyToPath,
        podfields.ClaimVolume,
        podfields.EphemeralVolume,
        podfields.ClaimTemplate,
        podfields.ClaimSpec,
        podfields.ClaimResources,
        podfields.ClaimRequests,
        podfields.PullSecret,
        models.SessionStatus,
        models.Condition,
        models.GpuSummary,
        models.AppStatus,
    ]
    assert [m for c in classes for m in walk(c)] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("2", "2"),
        (3, "3"),
        ("1Gi", "1073741824"),
        ("1.5k", "1500"),
        ("1e3", "1000"),
        ("12e-1", "1.2"),
        ("1E", "1e18"),
    ],
)
def test_quantities_compare_as_kubernetes_reads_them(text: int | str, value: str) -> None:
    from decimal import Decimal

    from kubesessions.api.modelbase import quantity_value

    assert quantity_value(text) == Decimal(value)
