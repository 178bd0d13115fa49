from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from kubesessions.api.models import AppSpec, AppSuspend, Resources, SessionSpec
from kubesessions.control.decide import children

pytestmark = pytest.mark.unit

REF = children.SessionRef(name="s1", namespace="ns", uid="uid-1")
APP = AppSpec.model_validate(
    {
        "image": "img:1",
        "entrypoint": "pkg.mod:App",
        "resources": {"gpu": 1, "cpu": "2", "memory": "4Gi"},
        "env": [{"name": "A", "value": "app"}, {"name": "B", "value": "app"}],
        "nodeSelector": {"zone": "a"},
        "defaultSessionTimeout": 90,
        "maxSessionTimeout": 600,
        "sessionOverrides": ["entrypoint", "resources", "env", "nodeSelector"],
    }
)


def pod_for(spec: dict[str, Any], app: AppSpec | None = APP) -> dict[str, Any]:
    return children.build_pod(REF, "counter" if app else None, app, SessionSpec.model_validate(spec))


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


def env_of(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(pod)["env"]}


def test_pod_is_restricted_tokenless_and_never_restarted() -> None:
    pod = pod_for({"app": "counter"})
    spec, c = pod["spec"], container(pod)
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert {"name": "scratch", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_children_are_owned_by_the_session_and_labelled() -> None:
    for obj in (
        pod_for({"app": "counter"}),
        children.build_service(REF, "counter"),
        children.build_secret(REF, "counter", "t"),
    ):
        meta = obj["metadata"]
        assert meta["ownerReferences"] == [children.owner_reference(REF)]
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"] == {
            "app.kubernetes.io/managed-by": "kube-sessions",
            "kubesessions.io/session": "s1",
            "kubesessions.io/app": "counter",
        }
        assert not any(k.startswith("kopf.") for k in meta.get("annotations", {}))


def test_env_carries_the_contract_and_the_token_by_reference() -> None:
    env = env_of(pod_for({"app": "counter", "sessionTimeout": 120, "config": {"k": [1, 2]}}))
    assert env["SESSION_ID"] == "s1"
    assert env["SESSION_TIMEOUT"] == "120"
    assert env["KUBESESSIONS_APP"] == "pkg.mod:App"
    assert json.loads(env["KUBESESSIONS_CONFIG"]) == {"k": [1, 2]}
    assert env["KUBESESSIONS_SESSION_TOKEN"] == {"secretKeyRef": {"name": "s1-token", "key": "token"}}
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_app_default_timeout_applies_when_the_session_sets_none() -> None:
    assert env_of(pod_for({"app": "counter"}))["SESSION_TIMEOUT"] == "90"


def test_session_template_wins_field_by_field() -> None:
    pod = pod_for(
        {
            "app": "counter",
            "template": {
                "entrypoint": "pkg.other:App",
                "resources": {"memory": "8Gi"},
                "env": [{"name": "B", "value": "session"}],
                "nodeSelector": {"disk": "ssd"},
            },
        }
    )
    c = container(pod)
    assert c["image"] == "img:1"
    assert env_of(pod)["KUBESESSIONS_APP"] == "pkg.other:App"
    assert env_of(pod)["A"] == "app" and env_of(pod)["B"] == "session"
    assert c["resources"]["limits"] == {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"}
    assert c["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert pod["spec"]["nodeSelector"] == {"zone": "a", "disk": "ssd"}


@pytest.mark.parametrize(
    ("overrides", "template", "refused"),
    [
        (None, {"resources": {"gpu": 8}}, "resources"),
        (None, {"entrypoint": "pkg.other:App"}, "entrypoint"),
        (["resources"], {"resources": {"gpu": 8}, "env": [{"name": "X", "value": "1"}]}, "env"),
        (["env"], {"image": "any:1"}, "image"),
    ],
)
def test_a_session_overrides_only_what_its_app_allows(
    overrides: list[str] | None, template: dict[str, Any], refused: str
) -> None:
    """Issue 25, defect 1: a Session of an App could set any GPU count, image, env, node."""
    app = APP.model_copy(update={"sessionOverrides": overrides})
    with pytest.raises(children.SpecError) as raised:
        pod_for({"app": "counter", "template": template}, app)
    allowed = ", ".join(overrides or ()) or "nothing"
    assert str(raised.value) == (
        f"spec.template sets {refused}, which App counter does not let its Sessions override "
        f"(its spec.sessionOverrides allows: {allowed})"
    )


@pytest.mark.parametrize(
    ("resources", "over"),
    [
        ({"gpu": 3}, "gpu 3 > 2"),
        ({"memory": "16.5Gi"}, "memory 16.5Gi > 16Gi"),
        ({"cpu": "4001m"}, "cpu 4001m > 4"),
        ({"gpu": 4, "memory": "18G"}, "gpu 4 > 2, memory 18G > 16Gi"),
    ],
)
def test_a_session_asks_for_no_more_than_its_apps_maxima(resources: dict[str, Any], over: str) -> None:
    """Issue 25, defect 1: "resources" allowed was any GPU count the CRD takes (16)."""
    app = APP.model_copy(update={"sessionMaxResources": Resources(gpu=2, cpu="4", memory="16Gi")})
    with pytest.raises(children.SpecError) as raised:
        pod_for({"app": "counter", "template": {"resources": resources}}, app)
    assert str(raised.value) == (
        f"spec.template.resources asks for more than App counter allows a Session (spec.sessionMaxResources): {over}"
    )
    within = pod_for(
        {"app": "counter", "template": {"resources": {"gpu": 2, "memory": "16Gi", "cpu": "4000m"}}}, app
    )
    assert container(within)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    # A MIG slice counts as one GPU.
    pod_for({"app": "counter", "template": {"resources": {"migProfile": "1g.10gb"}}}, app)


def test_a_session_of_an_app_without_overrides_sets_config_and_timeouts_only() -> None:
    app = APP.model_copy(update={"sessionOverrides": None})
    pod = pod_for({"app": "counter", "sessionTimeout": 300, "maxLifetime": 600, "config": {"k": 1}}, app)
    assert env_of(pod)["SESSION_TIMEOUT"] == "300" and env_of(pod)["KUBESESSIONS_CONFIG"] == '{"k":1}'


def test_gpu_product_and_toleration() -> None:
    pod = pod_for({"app": "counter", "template": {"resources": {"gpu": 2, "gpuProduct": "NVIDIA-H100"}}})
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert pod["spec"]["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]


def test_mig_profile_replaces_whole_gpus() -> None:
    pod = pod_for({"app": "counter", "template": {"resources": {"migProfile": "1g.10gb"}}})
    limits = container(pod)["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in limits
    # A slice counts as one GPU in the status (and in `kubectl get sess`), not none.
    spec = SessionSpec.model_validate(
        {"app": "counter", "template": {"resources": {"migProfile": "1g.10gb"}}}
    )
    summary = children.gpu_summary(None, spec)
    assert (summary.requested, summary.migProfile) == (1, "1g.10gb")


def test_cpu_only_session_has_no_gpu_limit_or_toleration() -> None:
    pod = pod_for({"template": {"image": "i", "entrypoint": "a:B"}}, app=None)
    assert "resources" not in container(pod) or not container(pod)["resources"]
    assert "tolerations" not in pod["spec"]
    assert pod["metadata"]["labels"]["kubesessions.io/app"] == "inline"


@pytest.mark.parametrize(
    ("spec", "app", "message"),
    [
        ({"app": "counter", "sessionTimeout": 601}, APP, "above the App's maxSessionTimeout 600"),
        ({"template": {"image": "i"}}, None, "no entrypoint"),
        (
            {"app": "counter", "suspend": {"keepSeconds": 3601}},
            APP.model_copy(update={"suspend": AppSuspend(enabled=True, keepSeconds=3600)}),
            "spec.suspend.keepSeconds 3601 is above the App's spec.suspend.keepSeconds 3600",
        ),
        (
            {"app": "counter", "maxLifetime": 60},
            APP,
            "maxLifetime 60 is below the sessionTimeout in force (90)",
        ),
    ],
)
def test_specs_that_cannot_run_are_refused(spec: dict[str, Any], app: AppSpec | None, message: str) -> None:
    with pytest.raises(children.SpecError, match=re.escape(message)):
        pod_for(spec, app)


def test_service_selects_exactly_the_session_pod() -> None:
    service = children.build_service(REF, "counter")
    pod = pod_for({"app": "counter"})
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"]["kubesessions.io/session"] == "s1"
    assert children.endpoint(REF) == "http://s1.ns.svc:8080"


def test_secret_holds_a_fresh_random_token() -> None:
    a, b = children.new_token(), children.new_token()
    assert a != b and len(a) >= 40
    secret = children.build_secret(REF, "counter", a)
    assert base64.b64decode(secret["data"]["token"]).decode() == a


def test_idle_grace_reaches_the_worker() -> None:
    pod = children.build_pod(
        REF, "counter", APP, SessionSpec.model_validate({"app": "counter"}), idle_grace=7
    )
    assert env_of(pod)["KUBESESSIONS_IDLE_GRACE"] == "7"


REAL_APP = AppSpec.model_validate(
    {
        "image": "img:1",
        "entrypoint": "pkg.mod:App",
        "resources": {"memory": "4Gi", "ephemeralStorage": "20Gi"},
        "volumes": [
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            {"name": "models", "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True}},
            {
                "name": "settings",
                "configMap": {"name": "app-settings", "items": [{"key": "k", "path": "a/k"}]},
            },
        ],
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "models", "mountPath": "/models", "readOnly": True},
        ],
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccountName": "model-reader",
        "setupTimeout": 1800,
        "scratchSize": "5Gi",
        "sessionOverrides": ["volumes", "volumeMounts", "scratchSize"],
    }
)


def test_a_real_apps_volumes_pull_secrets_account_and_storage_reach_the_pod() -> None:
    pod = pod_for({"app": "counter"}, REAL_APP)
    spec, c = pod["spec"], container(pod)
    assert spec["volumes"] == [
        {"name": "scratch", "emptyDir": {"sizeLimit": "5Gi"}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"name": "models", "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True}},
        {"name": "settings", "configMap": {"name": "app-settings", "items": [{"key": "k", "path": "a/k"}]}},
    ]
    assert c["volumeMounts"] == [
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "models", "mountPath": "/models", "readOnly": True},
    ]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "model-reader"
    # A named account alone mounts no token: the App must ask for it in so many words.
    assert spec["automountServiceAccountToken"] is False
    assert c["resources"]["limits"]["ephemeral-storage"] == "20Gi"
    assert c["resources"]["requests"]["ephemeral-storage"] == "20Gi"
    assert pod["metadata"]["annotations"] == {"kubesessions.io/setup-timeout": "1800"}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_the_scratch_space_is_sized_and_the_token_mounted_only_when_asked() -> None:
    pod = pod_for({"app": "counter"})
    assert pod["spec"]["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert pod["metadata"]["annotations"] == {"kubesessions.io/setup-timeout": "600"}
    asks = AppSpec.model_validate({"image": "i", "entrypoint": "a:B", "automountServiceAccountToken": True})
    assert pod_for({"app": "counter"}, asks)["spec"]["automountServiceAccountToken"] is True


def test_a_sessions_volumes_and_mounts_join_the_apps_by_name_and_path() -> None:
    pod = pod_for(
        {
            "app": "counter",
            "template": {
                "volumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
                "volumeMounts": [{"name": "settings", "mountPath": "/models"}],
                "scratchSize": "2Gi",
            },
        },
        REAL_APP,
    )
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["shm"]["emptyDir"]["sizeLimit"] == "2Gi"
    assert volumes["scratch"]["emptyDir"]["sizeLimit"] == "2Gi"
    mounts = {m["mountPath"]: m["name"] for m in container(pod)["volumeMounts"]}
    assert mounts == {"/tmp": "scratch", "/dev/shm": "shm", "/models": "settings"}


def test_a_mount_of_no_declared_volume_or_an_unallowed_volume_is_refused() -> None:
    with pytest.raises(
        children.SpecError, match=r"volumeMounts: each name must be one of .*not declared: cache"
    ):
        pod_for(
            {"app": "counter", "template": {"volumeMounts": [{"name": "cache", "mountPath": "/c"}]}}, REAL_APP
        )
    with pytest.raises(children.SpecError, match="serviceAccountName"):
        pod_for({"app": "counter", "template": {"serviceAccountName": "admin"}}, REAL_APP)
