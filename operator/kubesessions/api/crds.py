"""CustomResourceDefinitions generated from :mod:`kubesessions.api.models`, with the
ValidatingAdmissionPolicy that guards what a Session's template may name.

`kubesessions crds` prints them, `--write` writes `crds/`, `--check` fails (with a diff)
when the committed files differ from what the models generate.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel

from kubesessions.api.models import (
    SESSION_NAME_RULE,
    TEMPLATE_VERB,
    AppSpec,
    AppStatus,
    SessionSpec,
    SessionStatus,
)
from kubesessions.api.names import GROUP, JSON, VERSION

_DROP = {"title", "$defs", "additionalProperties"}
LABELS = {"app.kubernetes.io/name": "kube-sessions", "app.kubernetes.io/part-of": "kube-sessions"}
ADMISSION = "admissionregistration.k8s.io/v1"


def structural(schema: JSON, defs: JSON | None = None) -> JSON:
    """A pydantic JSON schema as a Kubernetes structural schema: refs inlined, nullables
    folded into optional fields, free-form objects marked to keep their fields."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return structural({**defs[schema["$ref"].rsplit("/", 1)[1]], **_extras(schema)}, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            return structural({**options[0], **_extras(schema)}, defs)
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            merged: JSON = {"x-kubernetes-int-or-string": True, **_extras(schema)}
            for option in options:
                merged.update({k: v for k, v in option.items() if k not in ("type", "minimum")})
            return structural(merged, defs)
        raise ValueError(f"cannot express {schema} in a structural schema")
    out: JSON = {}
    for key, value in schema.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    extra = schema.get("additionalProperties")
    if schema.get("type") == "object" and "properties" not in schema:
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _extras(schema: JSON) -> JSON:
    """What a reference or union carries beside it (description, default, CEL rules)."""
    return {k: v for k, v in schema.items() if k not in ("$ref", "anyOf", "$defs")}


def model_schema(model: type[BaseModel]) -> JSON:
    return structural(model.model_json_schema(mode="validation"))


def _crd(
    kind: str,
    plural: str,
    short_names: list[str],
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[JSON],
    description: str,
    subresources: JSON | None = None,
    rules: list[JSON] | None = None,
) -> JSON:
    """``rules``: CEL rules on the whole object (the only place that sees ``metadata.name``)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": LABELS},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["kube-sessions"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}, **(subresources or {})},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            **({"x-kubernetes-validations": rules} if rules else {}),
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": model_schema(spec),
                                "status": model_schema(status),
                            },
                        }
                    },
                }
            ],
        },
    }


def session_crd() -> JSON:
    return _crd(
        "Session",
        "sessions",
        ["sess"],
        SessionSpec,
        SessionStatus,
        [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {
                "name": "Reason",
                "type": "string",
                "jsonPath": ".status.reason",
                "description": "Why the session is in its phase (e.g. AppNotFound, Unschedulable, IdleTimeout).",
            },
            {"name": "App", "type": "string", "jsonPath": ".spec.app"},
            {
                "name": "GPUs",
                "type": "integer",
                "jsonPath": ".status.gpus.requested",
                "description": "GPUs asked for: whole GPUs, or 1 for a MIG slice.",
            },
            {"name": "Timeout", "type": "integer", "jsonPath": ".status.sessionTimeout"},
            {
                "name": "Idle-since",
                "type": "date",
                "jsonPath": ".status.idleSince",
                "description": "Time since the last call or keepalive as the operator last recorded it: "
                "refreshed lazily (at most every max(1 s, timeout/10), and at the idle deadline); the "
                "gateway's GET /v1/sessions/{id} answers live. Empty once the session has ended.",
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            {"name": "GPU-seconds", "type": "number", "jsonPath": ".status.gpuSeconds.held", "priority": 1},
            {
                "name": "Busy-%",
                "type": "integer",
                "jsonPath": ".status.gpuSeconds.busyPercent",
                "priority": 1,
            },
            {
                "name": "Kept-until",
                "type": "date",
                "jsonPath": ".status.suspension.expiresAt",
                "priority": 1,
                "description": "While Suspended: when its saved state is deleted and the session ends.",
            },
        ],
        "A client's session on one warm worker pod, ended when idle past sessionTimeout or closed.",
        rules=[SESSION_NAME_RULE],
    )


def app_crd() -> JSON:
    return _crd(
        "App",
        "apps",
        ["ksapp"],
        AppSpec,
        AppStatus,
        [
            {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
            {"name": "Entrypoint", "type": "string", "jsonPath": ".spec.entrypoint"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".spec.resources.gpu"},
            {"name": "Pool", "type": "integer", "jsonPath": ".spec.warmPool.size"},
            {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend.enabled", "priority": 1},
            {
                "name": "Ready",
                "type": "integer",
                "jsonPath": ".status.warmPool.ready",
                "description": "Warm pool workers ready to be claimed.",
            },
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        "A template for workers of one kind: image, app class, resources, timeouts, warm pool.",
        # `kubectl scale app/<name> --replicas N`, an HPA or KEDA size the warm pool.
        {
            "scale": {
                "specReplicasPath": ".spec.warmPool.size",
                "statusReplicasPath": ".status.warmPool.ready",
                "labelSelectorPath": ".status.warmPool.selector",
            }
        },
    )


# What a template (variables.t) sets that only a caller with the TEMPLATE_VERB may set, as CEL
# tests and what each is called: an image, a Secret, ConfigMap or PersistentVolumeClaim (in env,
# a volume or as a pull secret), a ServiceAccount or its token, a node, a toleration.
_PRIVILEGED = [
    ("has(variables.t.image)", "image"),
    (
        "has(variables.t.env) && variables.t.env.exists(e, has(e.valueFrom) && "
        "(has(e.valueFrom.secretKeyRef) || has(e.valueFrom.configMapKeyRef)))",
        "env from a Secret or ConfigMap",
    ),
    (
        "has(variables.t.volumes) && variables.t.volumes.exists(v, "
        "has(v.secret) || has(v.configMap) || has(v.persistentVolumeClaim))",
        "a volume of a Secret, ConfigMap or PersistentVolumeClaim",
    ),
    ("has(variables.t.imagePullSecrets)", "imagePullSecrets"),
    ("has(variables.t.serviceAccountName)", "serviceAccountName"),
    (
        "has(variables.t.automountServiceAccountToken) && variables.t.automountServiceAccountToken",
        "automountServiceAccountToken",
    ),
    ("has(variables.t.nodeSelector)", "nodeSelector"),
    ("has(variables.t.tolerations)", "tolerations"),
]
TEMPLATE_POLICY = f"sessions.{GROUP}-template"


def template_policy() -> list[JSON]:
    """A ValidatingAdmissionPolicy and its binding: a Session whose `spec.template` names an
    image, a Secret, ConfigMap or PersistentVolumeClaim, a ServiceAccount, a node or a
    toleration is refused unless the user creating it
    may `override-template` sessions in its namespace. The API server checks it (no webhook)."""
    privileged = " + ".join(f"({test} ? [{what!r}] : [])" for test, what in _PRIVILEGED)
    may = (
        f"authorizer.group('{GROUP}').resource('sessions').namespace(request.namespace)"
        f".check('{TEMPLATE_VERB}').allowed()"
    )
    policy: JSON = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": TEMPLATE_POLICY, "labels": LABELS},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["sessions"],
                    }
                ]
            },
            # An update that leaves the template as it was (the gateway's close or keepalive
            # annotation on a privileged Session) needs no right (the CRD keeps it immutable anyway).
            "matchConditions": [
                {
                    "name": "sets-a-template",
                    "expression": "has(object.spec.template) && (request.operation == 'CREATE' || "
                    "!has(oldObject.spec.template) || oldObject.spec.template != object.spec.template)",
                }
            ],
            "variables": [
                {"name": "t", "expression": "object.spec.template"},
                {"name": "privileged", "expression": privileged},
            ],
            "validations": [
                {
                    "expression": f"size(variables.privileged) == 0 || {may}",
                    "messageExpression": "'spec.template sets ' + variables.privileged.join(', ') + "
                    "': ' + request.userInfo.username + ' may not; it needs the verb \""
                    + TEMPLATE_VERB
                    + f"\" on sessions.{GROUP} in namespace ' + request.namespace + "
                    "' (or leave these to the App)'",
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding: JSON = {
        "apiVersion": ADMISSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": TEMPLATE_POLICY, "labels": LABELS},
        "spec": {"policyName": TEMPLATE_POLICY, "validationActions": ["Deny"]},
    }
    return [policy, binding]


def documents() -> list[JSON]:
    """Everything `crds/` holds, in the order to apply it."""
    return [app_crd(), session_crd(), *template_policy()]


_PLURALS = {
    "CustomResourceDefinition": "customresourcedefinitions",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


def api_path(doc: JSON) -> str:
    """Where the API serves ``doc`` (all of them are cluster-scoped)."""
    return f"/apis/{doc['apiVersion']}/{_PLURALS[doc['kind']]}/{doc['metadata']['name']}"


def file_name(doc: JSON) -> str:
    if doc["kind"] == "CustomResourceDefinition":
        return f"{doc['metadata']['name']}.yaml"
    suffix = "policy" if doc["kind"] == "ValidatingAdmissionPolicy" else "policybinding"
    return f"{doc['metadata']['name']}-{suffix}.yaml"


HEADER = "# Generated from operator/kubesessions/api by `kubesessions crds --write`. Do not edit.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text of every document."""
    return {file_name(doc): HEADER + yaml.safe_dump(doc, sort_keys=False, width=120) for doc in documents()}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def check(directory: Path) -> list[str]:
    """Unified diffs between ``directory`` and the models; empty when they agree."""
    diffs = []
    for name, text in rendered().items():
        path = directory / name
        committed = path.read_text() if path.exists() else ""
        if committed != text:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        committed.splitlines(keepends=True),
                        text.splitlines(keepends=True),
                        f"{path} (committed)",
                        f"{path} (from the models)",
                    )
                )
            )
    return diffs
