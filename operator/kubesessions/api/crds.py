"""CustomResourceDefinitions generated from :mod:`kubesessions.api.models`.

`kubesessions crds` prints them, `--write` writes `crds/`, `--check` fails (with a diff)
when the committed files differ from what the models generate.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import BaseModel

from kubesessions.api.models import SESSION_NAME_RULE, AppSpec, AppStatus, SessionSpec, SessionStatus
from kubesessions.api.names import GROUP, JSON, VERSION

_DROP = {"title", "$defs", "additionalProperties"}


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
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "kube-sessions",
                "app.kubernetes.io/part-of": "kube-sessions",
            },
        },
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


HEADER = "# Generated from operator/kubesessions/models.py by `kubesessions crds --write`. Do not edit.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {
        f"{crd['metadata']['name']}.yaml": HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)
        for crd in (app_crd(), session_crd())
    }


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
