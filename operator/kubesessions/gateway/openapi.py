"""The OpenAPI 3.1 document of the gateway API; request schemas come from the models that validate."""

from __future__ import annotations

from functools import cache
from typing import Any

from .problems import STATUS
from .requests import CreateSessionRequest, RunRequest

JSON = dict[str, Any]


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: JSON) -> JSON:
    return {"content": {"application/json": {"schema": schema}}}


def _problems(*codes: str) -> JSON:
    out: JSON = {}
    for code in codes:
        status = str(int(STATUS[code]))
        out.setdefault(
            status, {"description": "", "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        )
        out[status]["description"] = " or ".join(filter(None, [out[status]["description"], code]))
    return out


SESSION_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The session id.",
}
NAMESPACE = [
    {
        "name": "X-Kubesessions-Namespace",
        "in": "header",
        "schema": {"type": "string"},
        "description": "Namespace of the session (default: the gateway's).",
    },
    {"name": "namespace", "in": "query", "schema": {"type": "string"}, "description": "Same as the header."},
]
AUTH = ("UNAUTHORIZED", "VALIDATION")
LOOKUP = ("SESSION_NOT_FOUND", "SESSION_EXPIRED")


@cache
def document() -> JSON:
    run_reply = {
        "type": "object",
        "required": ["session_id", "output"],
        "properties": {
            "session_id": {"type": "string"},
            "output": {"description": "What run(input) returned (a list when it yielded)."},
            "session_closed": {"type": "boolean", "description": "The app ended its session."},
            "duration_ms": {"type": "number"},
        },
    }
    session = {
        "type": "object",
        "properties": {
            name: {"type": ["string", "null"]}
            for name in (
                "session_id",
                "namespace",
                "app",
                "phase",
                "reason",
                "message",
                "created_at",
                "ready_at",
                "last_activity",
                "expires_at",
                "ended_at",
            )
        }
        | {
            "session_timeout": {"type": ["integer", "null"]},
            "calls": {"type": ["integer", "null"]},
            "gpus": {"type": ["object", "null"]},
        },
    }
    problem = {
        "type": "object",
        "required": ["status", "code", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "code": {"type": "string", "enum": sorted(STATUS)},
            "detail": {"type": "string"},
            "session_id": {"type": "string"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "kube-sessions gateway", "version": "v1"},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes token; checked with TokenReview and SubjectAccessReview.",
                }
            },
            "schemas": {
                "RunRequest": RunRequest.model_json_schema(),
                "CreateSessionRequest": CreateSessionRequest.model_json_schema(),
                "RunReply": run_reply,
                "Session": session,
                "Problem": problem,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/run": {
                "post": {
                    "summary": 'Run input on a session: "new", an id, or none (one-shot: start, run, close).',
                    "parameters": NAMESPACE,
                    "requestBody": {"required": True, **_json(_ref("RunRequest"))},
                    "responses": {
                        "200": {
                            "description": "The output; with stream, SSE: session, output..., then done or error.",
                            **_json(_ref("RunReply")),
                        },
                        **_problems(
                            *AUTH,
                            *LOOKUP,
                            "APP_MISMATCH",
                            "APP_NOT_FOUND",
                            "PAYLOAD_TOO_LARGE",
                            "QUEUE_FULL",
                            "RUN_FAILED",
                            "WORKER_UNAVAILABLE",
                            "CALL_TIMEOUT",
                        ),
                    },
                }
            },
            "/v1/sessions": {
                "get": {
                    "summary": "Sessions of the namespace (query app= to filter).",
                    "parameters": NAMESPACE,
                    "responses": {
                        "200": {
                            "description": "The sessions.",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {"sessions": {"type": "array", "items": _ref("Session")}},
                                }
                            ),
                        },
                        **_problems(*AUTH),
                    },
                },
                "post": {
                    "summary": "Start a session without a call; answers once it is Ready.",
                    "parameters": NAMESPACE,
                    "requestBody": {"required": True, **_json(_ref("CreateSessionRequest"))},
                    "responses": {
                        "201": {"description": "The Ready session.", **_json(_ref("Session"))},
                        **_problems(*AUTH, "APP_NOT_FOUND", "WORKER_UNAVAILABLE"),
                    },
                },
            },
            "/v1/sessions/{id}": {
                "get": {
                    "summary": "One session, finished ones included while their tombstone lasts.",
                    "parameters": [SESSION_ID, *NAMESPACE],
                    "responses": {
                        "200": {"description": "The session.", **_json(_ref("Session"))},
                        **_problems(*AUTH, "SESSION_NOT_FOUND"),
                    },
                },
                "delete": {
                    "summary": "Close the session: its worker stops.",
                    "parameters": [SESSION_ID, *NAMESPACE],
                    "responses": {
                        "204": {"description": "Closed (or already finished)."},
                        **_problems(*AUTH, "SESSION_NOT_FOUND"),
                    },
                },
            },
            "/v1/sessions/{id}/keepalive": {
                "post": {
                    "summary": "Count as activity without a call.",
                    "parameters": [SESSION_ID, *NAMESPACE],
                    "responses": {
                        "200": {"description": "The worker's last activity.", **_json({"type": "object"})},
                        **_problems(*AUTH, *LOOKUP, "WORKER_UNAVAILABLE"),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Alive.", "security": [], "responses": {"200": {"description": "ok"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "The watch caches are filled.",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not yet"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus text.",
                    "security": [],
                    "responses": {"200": {"description": "metrics"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI"}},
                }
            },
        },
    }
