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


@pytest.mark.parametrize(
    ("app_suspend", "session_suspend", "want"),
    [
        (None, None, None),  # off unless the App turns it on
        ({"enabled": False}, {"enabled": True}, None),  # a Session cannot turn on what its App has off
        ({"enabled": True, "keepSeconds": 600}, None, 600),
        ({"enabled": True, "keepSeconds": 600}, {"enabled": False}, None),  # a Session may turn it off
        ({"enabled": True, "keepSeconds": 600}, {"keepSeconds": 120}, 120),  # or keep it shorter
        ({"enabled": True, "keepSeconds": 600}, {"keepSeconds": 6000}, 600),  # never longer
    ],
)
def test_effective_suspend_lets_a_session_turn_it_off_or_shorten_it_only(
    app_suspend: dict | None, session_suspend: dict | None, want: int | None
) -> None:
    app = models.AppSpec.model_validate(
        {"image": "i", "suspend": app_suspend} if app_suspend else {"image": "i"}
    )
    spec = models.SessionSpec.model_validate(
        {"app": "a", "suspend": session_suspend} if session_suspend else {"app": "a"}
    )
    got = models.effective_suspend(spec, app)
    assert (got.keepSeconds if got else None) == want
    assert models.effective_suspend(spec, None) is None  # no App: nothing to suspend with
