"""One table of Session/App manifests and their verdicts, checked twice: by the pydantic
models (tests/unit/test_models.py) and by the API server (tests/cluster/test_crds.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).parent.parent / "examples"
IMAGE = "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0"


@dataclass(frozen=True)
class Case:
    id: str
    manifest: dict[str, Any]
    field: str | None  # None: valid; else text naming the field that both refusals must contain


def session(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "s"},
        "spec": spec,
    }


def named(name: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return {**manifest, "metadata": {"name": name}}


def app(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "kubesessions.io/v1alpha1", "kind": "App", "metadata": {"name": "a"}, "spec": spec}


def with_resources(**resources: Any) -> dict[str, Any]:
    return session({"template": {"image": IMAGE, "resources": resources}})


def examples() -> list[Case]:
    return [
        Case(f"example:{p.relative_to(EXAMPLES)}:{doc['metadata']['name']}", doc, None)
        # The manifests, and each example app's App (examples/<app>/app.yaml).
        for p in sorted([*EXAMPLES.glob("*.yaml"), *EXAMPLES.glob("*/app.yaml")])
        for doc in yaml.safe_load_all(p.read_text())
        if doc
    ]


GOOD = [
    Case("timeout 1", session({"app": "x", "sessionTimeout": 1}), None),
    Case("timeout 3600", session({"app": "x", "sessionTimeout": 3600}), None),
    Case("default timeout", session({"app": "x"}), None),
    Case("integer cpu", with_resources(cpu=2, memory="1Gi"), None),
    Case("gpu 16", with_resources(gpu=16), None),
    Case("gpu 0 with mig", with_resources(gpu=0, migProfile="2g.20gb"), None),
    Case("maxLifetime equal", session({"app": "x", "sessionTimeout": 300, "maxLifetime": 300}), None),
    Case("free-form config", session({"app": "x", "config": {"a": [1, {"b": None}], "c": "d"}}), None),
    Case(
        "env from secret",
        session(
            {
                "app": "x",
                "template": {
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
                },
            }
        ),
        None,
    ),
    Case("63-character name", named("s" + "0" * 61 + "z", session({"app": "x"})), None),
    Case("name with '-'", named("my-session-2", session({"app": "x"})), None),
    Case("suspend on", app({"image": IMAGE, "suspend": {"enabled": True}}), None),
    Case(
        "suspend limits",
        app(
            {
                "image": IMAGE,
                "suspend": {"enabled": True, "keepSeconds": 2592000, "maxStateBytes": 10737418240},
            }
        ),
        None,
    ),
    Case("session suspend off", session({"app": "x", "suspend": {"enabled": False}}), None),
    Case("session keeps shorter", session({"app": "x", "suspend": {"keepSeconds": 60}}), None),
    Case("warm pool", app({"image": IMAGE, "warmPool": {"size": 64, "strategy": "OnUse"}}), None),
    Case("empty warm pool", app({"image": IMAGE, "warmPool": {"size": 0}}), None),
    Case("session overrides", app({"image": IMAGE, "sessionOverrides": ["resources", "env"]}), None),
    Case("session maxima", app({"image": IMAGE, "sessionMaxResources": {"gpu": 2, "memory": "16Gi"}}), None),
    Case(
        "a real app's volumes, pull secrets, account and timeouts",
        app(
            {
                "image": IMAGE,
                "resources": {"memory": "8Gi", "ephemeralStorage": "20Gi"},
                "volumes": [
                    {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
                    {"name": "work", "emptyDir": {}},
                    {
                        "name": "settings",
                        "configMap": {"name": "s", "items": [{"key": "k", "path": "a/k.json"}]},
                    },
                    {"name": "keys", "secret": {"secretName": "k", "defaultMode": 256, "optional": True}},
                    {
                        "name": "models",
                        "persistentVolumeClaim": {"claimName": "model-cache", "readOnly": True},
                    },
                    {
                        "name": "data",
                        "ephemeral": {
                            "volumeClaimTemplate": {
                                "spec": {
                                    "accessModes": ["ReadWriteOnce"],
                                    "storageClassName": "fast",
                                    "resources": {"requests": {"storage": "10Gi"}},
                                }
                            }
                        },
                    },
                ],
                "volumeMounts": [
                    {"name": "shm", "mountPath": "/dev/shm"},
                    {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "v1/weights"},
                ],
                "imagePullSecrets": [{"name": "regcred"}],
                "serviceAccountName": "model-reader",
                "automountServiceAccountToken": True,
                "setupTimeout": 1800,
                "scratchSize": "5Gi",
                "sessionOverrides": ["volumes", "volumeMounts", "setupTimeout", "scratchSize"],
            }
        ),
        None,
    ),
    Case(
        "session mounts the app's volume",
        session({"app": "x", "template": {"volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}]}}),
        None,
    ),
]


def with_volumes(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return app({"image": IMAGE, "volumes": volumes, **({"volumeMounts": mounts} if mounts else {})})


SHM = {"name": "shm", "emptyDir": {"medium": "Memory"}}

BAD = [
    # Names a Service cannot have (the Session's Service is named after it).
    Case(
        "name with a dot",
        named("my.session", session({"app": "x"})),
        "metadata.name: a Session's name must be a DNS-1035 label",
    ),
    Case(
        "name starting with a digit",
        named("1abc", session({"app": "x"})),
        "metadata.name: a Session's name must be a DNS-1035 label",
    ),
    Case(
        "64-character name",
        named("s" * 64, session({"app": "x"})),
        "metadata.name: a Session's name must be a DNS-1035 label",
    ),
    Case("keep too short", app({"image": IMAGE, "suspend": {"keepSeconds": 59}}), "suspend.keepSeconds"),
    Case("keep too long", app({"image": IMAGE, "suspend": {"keepSeconds": 2592001}}), "suspend.keepSeconds"),
    Case("no state allowed", app({"image": IMAGE, "suspend": {"maxStateBytes": 0}}), "suspend.maxStateBytes"),
    Case(
        "state over 10 GiB",
        app({"image": IMAGE, "suspend": {"maxStateBytes": 10737418241}}),
        "suspend.maxStateBytes",
    ),
    Case("unknown suspend field", app({"image": IMAGE, "suspend": {"enable": True}}), "enable"),
    Case(
        "session keep too short", session({"app": "x", "suspend": {"keepSeconds": 10}}), "suspend.keepSeconds"
    ),
    Case("session enabled string", session({"app": "x", "suspend": {"enabled": "yes"}}), "suspend.enabled"),
    Case("zero timeout", session({"app": "x", "sessionTimeout": 0}), "sessionTimeout"),
    Case("negative timeout", session({"app": "x", "sessionTimeout": -5}), "sessionTimeout"),
    Case("fractional timeout", session({"app": "x", "sessionTimeout": 1.5}), "sessionTimeout"),
    Case("string timeout", session({"app": "x", "sessionTimeout": "300"}), "sessionTimeout"),
    Case("too-large timeout", session({"app": "x", "sessionTimeout": 3601}), "sessionTimeout"),
    Case("missing app and image", session({"sessionTimeout": 60}), "spec.app or spec.template.image"),
    Case(
        "template without image",
        session({"template": {"entrypoint": "a.b:C"}}),
        "spec.app or spec.template.image",
    ),
    Case("unknown field", session({"app": "x", "sessionTimout": 60}), "sessionTimout"),
    Case("unknown nested field", with_resources(gpus=1), "gpus"),
    Case("bad quantity", with_resources(memory="8GB"), "memory"),
    Case("negative cpu", with_resources(cpu=-1), "cpu"),
    Case("too many gpus", with_resources(gpu=17), "resources.gpu"),
    Case("fractional gpus", with_resources(gpu=1.5), "resources.gpu"),
    Case("gpu and mig", with_resources(gpu=1, migProfile="1g.10gb"), "mutually exclusive"),
    Case("bad mig profile", with_resources(migProfile="big"), "migProfile"),
    Case(
        "maxLifetime below timeout",
        session({"app": "x", "sessionTimeout": 300, "maxLifetime": 100}),
        "maxLifetime",
    ),
    Case("bad app name", session({"app": "My_App"}), "spec.app"),
    Case("bad entrypoint", session({"app": "x", "template": {"entrypoint": "not-a-class"}}), "entrypoint"),
    Case("env without name", session({"app": "x", "template": {"env": [{"value": "v"}]}}), "name"),
    Case(
        "env with two sources",
        session(
            {
                "app": "x",
                "template": {
                    "env": [
                        {
                            "name": "A",
                            "valueFrom": {
                                "fieldRef": {"fieldPath": "metadata.name"},
                                "secretKeyRef": {"name": "s", "key": "k"},
                            },
                        }
                    ]
                },
            }
        ),
        "exactly one of",
    ),
    Case(
        "bad toleration operator",
        session({"app": "x", "template": {"tolerations": [{"operator": "Maybe"}]}}),
        "operator",
    ),
    Case(
        "app default above max",
        app({"image": IMAGE, "defaultSessionTimeout": 600, "maxSessionTimeout": 300}),
        "defaultSessionTimeout",
    ),
    Case("app without image", app({"entrypoint": "a:B"}), "image"),
    Case("app timeout too large", app({"image": IMAGE, "maxSessionTimeout": 7200}), "maxSessionTimeout"),
    Case("pool too large", app({"image": IMAGE, "warmPool": {"size": 65}}), "warmPool.size"),
    Case("negative pool", app({"image": IMAGE, "warmPool": {"size": -1}}), "warmPool.size"),
    Case(
        "bad pool strategy", app({"image": IMAGE, "warmPool": {"strategy": "Rolling"}}), "warmPool.strategy"
    ),
    Case("unknown override", app({"image": IMAGE, "sessionOverrides": ["config"]}), "sessionOverrides"),
    Case("override twice", app({"image": IMAGE, "sessionOverrides": ["env", "env"]}), "sessionOverrides"),
    Case("bad maximum", app({"image": IMAGE, "sessionMaxResources": {"memory": "8GB"}}), "memory"),
    Case(
        "volume with two sources",
        with_volumes([{"name": "v", "emptyDir": {}, "secret": {"secretName": "s"}}]),
        "a volume has exactly one of",
    ),
    Case("volume without a source", with_volumes([{"name": "v"}]), "a volume has exactly one of"),
    Case("hostPath volume", with_volumes([{"name": "v", "hostPath": {"path": "/"}}]), "hostPath"),
    Case("bad volume name", with_volumes([{"name": "My_Vol", "emptyDir": {}}]), "name"),
    Case("volume named scratch", with_volumes([{"name": "scratch", "emptyDir": {}}]), "scratchSize"),
    Case("bad emptyDir medium", with_volumes([{"name": "v", "emptyDir": {"medium": "Disk"}}]), "medium"),
    Case("bad sizeLimit", with_volumes([{"name": "v", "emptyDir": {"sizeLimit": "1GB"}}]), "sizeLimit"),
    Case(
        "file mode above 0777",
        with_volumes([{"name": "v", "secret": {"secretName": "s", "defaultMode": 1000}}]),
        "defaultMode",
    ),
    Case(
        "item path climbing out",
        with_volumes([{"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../k"}]}}]),
        "must be a relative path without '..'",
    ),
    Case(
        "claim without accessModes",
        with_volumes(
            [
                {
                    "name": "v",
                    "ephemeral": {
                        "volumeClaimTemplate": {"spec": {"resources": {"requests": {"storage": "1Gi"}}}}
                    },
                }
            ]
        ),
        "accessModes",
    ),
    Case("too many volumes", with_volumes([{"name": f"v{i}", "emptyDir": {}} for i in range(33)]), "volumes"),
    Case(
        "two volumes of one name",
        with_volumes([{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]),
        "volumes",
    ),
    Case(
        "mount of an undeclared volume",
        with_volumes([SHM], [{"name": "cache", "mountPath": "/cache"}]),
        "volumeMounts: each name must be one of the template's volumes",
    ),
    Case("relative mountPath", with_volumes([SHM], [{"name": "shm", "mountPath": "dev/shm"}]), "mountPath"),
    Case("mount over /tmp", with_volumes([SHM], [{"name": "shm", "mountPath": "/tmp"}]), "scratchSize"),
    Case(
        "subPath climbing out",
        with_volumes([SHM], [{"name": "shm", "mountPath": "/s", "subPath": "a/../../etc"}]),
        "must be a relative path without '..'",
    ),
    Case(
        "pull secret as a string", app({"image": IMAGE, "imagePullSecrets": ["regcred"]}), "imagePullSecrets"
    ),
    Case("bad service account", app({"image": IMAGE, "serviceAccountName": "Admin!"}), "serviceAccountName"),
    Case("zero setup timeout", app({"image": IMAGE, "setupTimeout": 0}), "setupTimeout"),
    Case("setup timeout above 6 h", app({"image": IMAGE, "setupTimeout": 21601}), "setupTimeout"),
    Case("bad scratch size", app({"image": IMAGE, "scratchSize": "lots"}), "scratchSize"),
    Case(
        "bad ephemeral storage",
        app({"image": IMAGE, "resources": {"ephemeralStorage": "-1Gi"}}),
        "ephemeralStorage",
    ),
]

# Changes to a valid Session after creation: (id, original spec, new spec, field named).
IMMUTABLE = [
    ("change app", {"app": "x"}, {"app": "other"}, "spec.app is immutable"),
    (
        "add template",
        {"app": "x"},
        {"app": "x", "template": {"entrypoint": "a:B"}},
        "spec.template is immutable",
    ),
    (
        "change template",
        {"template": {"image": IMAGE}},
        {"template": {"image": IMAGE + "-2"}},
        "spec.template is immutable",
    ),
]


def mutated(spec: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(session(spec))
    out["spec"] = new
    return out
