"""The OpenAPI 3.1 document of the gateway API; request schemas come from the models that validate."""

from __future__ import annotations

from functools import cache

from kubesessions.api.modelbase import DNS1123_LABEL, DNS1123_SUBDOMAIN
from kubesessions.api.names import CALL_ID_HEADER, JSON
from kubesessions.gateway.problems import STATUS
from kubesessions.gateway.requests import CALL_ID, NEW, CreateSessionRequest, RunRequest
from kubesessions.gateway.taskstatus import Status


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
TASK_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "The inference.sh task id (POST /apps/run answers it).",
}
# A task's status as the SDKs read it (their TaskStatus numbers).
STATUS_NUMBER: JSON = {
    "type": "integer",
    "enum": sorted(int(s) for s in Status),
    "description": "The SDK's TaskStatus: 2 queued, 6 setting up, 7 running, 10 completed, 11 failed, "
    "12 cancelled.",
}
# GET /tasks/{id}/status: what the JavaScript SDK polls with `stream: false`, in the SDK's envelope.
TASK_STATUS = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["id", "status"],
            "properties": {
                "id": {"type": "string"},
                "status": STATUS_NUMBER,
                "updated_at": {"type": ["string", "null"]},
            },
        }
    },
}
# Every route behind authentication asks the API server (a TokenReview at least).
AUTH = ("UNAUTHORIZED", "FORBIDDEN", "VALIDATION", "UPSTREAM_UNAVAILABLE")
LOOKUP = ("SESSION_NOT_FOUND", "SESSION_EXPIRED", "SESSION_ENDED")
# A task's view (GET /tasks/{id}, each line of its stream, cancel's answer).
TASK = {
    "type": "object",
    "required": ["id", "session_id", "status"],
    "properties": {
        "id": {"type": "string"},
        "app": {"type": ["string", "null"]},
        "namespace": {"type": "string"},
        "session_id": {"type": "string"},
        "status": STATUS_NUMBER,
        "input": {"description": "Known to the replica that took the task; null through others."},
        "output": {"description": "What the app's function returned, once completed."},
        "error": {"type": ["string", "null"]},
        "logs": {"type": "null"},
        "created_at": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]},
    },
}
# A session as the SDKs' AppSession.
APP_SESSION = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string"},
        "namespace": {"type": "string"},
        "app_id": {"type": ["string", "null"]},
        "worker_id": {"type": ["string", "null"]},
        "status": {"enum": ["active", "ended", "expired"]},
        "created_at": {"type": ["string", "null"]},
        "updated_at": {"type": ["string", "null"]},
        "expires_at": {"type": ["string", "null"]},
        "ended_at": {"type": ["string", "null"]},
        "idle_timeout": {"type": ["integer", "null"]},
        "call_count": {"type": "integer"},
        "last_call_at": {"type": ["string", "null"]},
    },
}
TASK_PROBLEMS = (*AUTH, "TASK_NOT_FOUND", *LOOKUP, "WORKER_UNAVAILABLE", "CALL_TIMEOUT")


def _data(schema: JSON) -> JSON:
    """The SDKs' envelope."""
    return _json({"type": "object", "required": ["data"], "properties": {"data": schema}})


def _app_run_request(apps: tuple[str, ...]) -> JSON:
    """``POST /apps/run`` as the SDKs send it (compat.AppRunRequest); the hosted service's fields
    this gateway refuses (webhook, infra, ...) are left out, so sending them is invalid."""
    name = DNS1123_SUBDOMAIN.removeprefix("^").removesuffix("$")
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["app"],
        "properties": {
            "app": {
                "type": "string",
                "pattern": rf"^(?:[^/@:]+/)?{name}(?:@[^/@:]+)?(?::[^/@:]+)?$",
                "description": "[namespace/]name[@version][:function]: the App `name`.",
                **({"examples": list(apps)} if apps else {}),
            },
            "input": {"description": "Whatever the app's function takes (any JSON)."},
            "session": {
                "type": "string",
                "maxLength": 253,
                "description": '"new", a session id, or absent for a one-shot task.',
            },
            "session_timeout": {"type": "integer", "minimum": 1, "maximum": 3600},
            "setup": {"type": ["object", "null"], "description": "The new session's config."},
            "function": {
                "const": "run",
                "description": "Which of the app's functions to call: `run`, or one the app declares "
                "(not listed here; a name it lacks fails the task).",
            },
            "stream": {"type": "boolean"},
            "wait": {"type": "boolean"},
        },
    }


def _compat_paths(apps: tuple[str, ...]) -> JSON:
    """The inference.sh SDKs' routes (compat.py), in their envelope; no namespace parameter (the
    SDKs send none: the gateway's default namespace, or where the session id is)."""
    task_ops = {
        "/tasks/{id}": ("get", "getTask", "The task (through any replica)."),
        "/tasks/{id}/status": (
            "get",
            "getTaskStatus",
            "The task's status alone (the JavaScript SDK polls it with stream: false, then reads "
            "GET /tasks/{id} when it changes).",
        ),
        "/tasks/{id}/cancel": ("post", "cancelTask", "Cancel the task: a queued call never runs."),
    }
    paths: JSON = {
        path: {
            method: {
                "operationId": operation,
                "summary": summary,
                "parameters": [TASK_ID],
                "responses": {
                    "200": {
                        "description": summary,
                        **(_json(TASK_STATUS) if path.endswith("/status") else _data(TASK)),
                    },
                    **_problems(*TASK_PROBLEMS),
                },
            }
        }
        for path, (method, operation, summary) in task_ops.items()
    }
    task_links = {
        f"{operation[0].upper()}{operation[1:]}": {
            "operationId": operation,
            "parameters": {"id": "$response.body#/data/id"},
        }
        for operation in ("getTask", "getTaskStatus", "streamTask", "cancelTask")
    }
    paths["/apps/run"] = {
        "post": {
            "operationId": "appsRun",
            "summary": "Start a task: one call on a session (new, an id, or one-shot); answers at once.",
            "requestBody": {"required": True, **_json(_app_run_request(apps))},
            "responses": {
                "200": {"description": "The task, queued.", **_data(TASK), "links": task_links},
                **_problems(
                    *AUTH, *LOOKUP, "APP_NOT_FOUND", "PAYLOAD_TOO_LARGE", "QUEUE_FULL", "WORKER_UNAVAILABLE"
                ),
            },
        }
    }
    paths["/tasks/{id}/stream"] = {
        "get": {
            "operationId": "streamTask",
            "summary": "The task as NDJSON: one line per change, heartbeat lines while it waits, until it ends.",
            "parameters": [TASK_ID],
            "responses": {
                "200": {
                    "description": 'NDJSON lines: the task, or {"type": "heartbeat"}.',
                    "content": {"application/x-ndjson": {"schema": {"type": "object"}}},
                },
                **_problems(*TASK_PROBLEMS),
            },
        }
    }
    session_id = {**SESSION_ID, "description": "The session id (looked up in the served namespaces)."}
    paths["/sessions"] = {
        "get": {
            "operationId": "listAppSessions",
            "summary": "The default namespace's sessions as the SDKs' AppSession.",
            "responses": {
                "200": {"description": "The sessions.", **_data({"type": "array", "items": APP_SESSION})},
                **_problems(*AUTH),
            },
        }
    }
    found = (*AUTH, "SESSION_NOT_FOUND", "SESSION_AMBIGUOUS")
    paths["/sessions/{id}"] = {
        "get": {
            "operationId": "getAppSession",
            "summary": "One session as the SDKs' AppSession.",
            "parameters": [session_id],
            "responses": {
                "200": {"description": "The session.", **_data(APP_SESSION)},
                **_problems(*found, "WORKER_UNAVAILABLE", "CALL_TIMEOUT"),
            },
        },
        "delete": {
            "operationId": "endAppSession",
            "summary": "End the session: its worker stops.",
            "parameters": [session_id],
            "responses": {"204": {"description": "Ended (or already finished)."}, **_problems(*found)},
        },
    }
    paths["/sessions/{id}/keepalive"] = {
        "post": {
            "operationId": "keepaliveAppSession",
            "summary": "Count as activity without a call.",
            "parameters": [session_id],
            "responses": {
                "200": {"description": "The session with its new deadline.", **_data(APP_SESSION)},
                **_problems(*found, *LOOKUP, "WORKER_UNAVAILABLE", "CALL_TIMEOUT"),
            },
        }
    }
    return paths


# One event of a streamed run, as the SSE parser sees it.
SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {"event": {"enum": ["session", "output", "done", "error"]}, "data": {"type": "string"}},
}
# From a new session (POST /v1/sessions) to the operations that take its id.
LINKS = {
    f"{verb}Session": {"operationId": operation, "parameters": {"id": "$response.body#/session_id"}}
    for verb, operation in (
        ("Get", "getSession"),
        ("Keepalive", "keepaliveSession"),
        ("Delete", "deleteSession"),
    )
}


def _namespace(namespaces: tuple[str, ...]) -> list[JSON]:
    """The namespace parameters: one of the served namespaces when the gateway serves a list."""
    schema: JSON = (
        {"type": "string", "enum": list(namespaces)}
        if namespaces
        else {"type": "string", "pattern": DNS1123_LABEL, "maxLength": 63}
    )
    return [
        {
            "name": "X-Kubesessions-Namespace",
            "in": "header",
            "schema": schema,
            "description": "Namespace of the session (default: the gateway's).",
        },
        {"name": "namespace", "in": "query", "schema": schema, "description": "Same as the header."},
    ]


def _with_apps(schema: JSON, apps: tuple[str, ...]) -> JSON:
    """The Apps the gateway knows as examples of ``app`` (so a client, or a fuzzer, can start a session)."""
    if apps:
        schema["properties"]["app"]["examples"] = list(apps)
    return schema


def _run_request(apps: tuple[str, ...]) -> JSON:
    """RunRequest's model, plus what the model cannot say: a new session needs an app, and the
    functions an app has beside ``run`` are known to its worker only."""
    schema = _with_apps(RunRequest.model_json_schema(), apps)
    schema["properties"]["function"] = {
        "const": "run",
        "default": "run",
        "description": "Which of the app's functions to call: `run`, or another function the app "
        "itself declares (`@kubesessions_worker.function`). Those depend on the app and are not "
        "listed here; a name the app lacks is 400 VALIDATION, which names the ones it has.",
    }
    schema["anyOf"] = [
        {"required": ["app"], "properties": {"app": {"type": "string"}}},
        {"required": ["session"], "properties": {"session": {"type": "string", "not": {"const": NEW}}}},
    ]
    return schema


@cache
def document(namespaces: tuple[str, ...] = (), apps: tuple[str, ...] = ()) -> JSON:
    """The document for a gateway serving ``namespaces`` (empty: all) that knows ``apps``."""
    namespace = _namespace(namespaces)
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
                "suspended_at",
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
                "RunRequest": _run_request(apps),
                "CreateSessionRequest": _with_apps(CreateSessionRequest.model_json_schema(), apps),
                "RunReply": run_reply,
                "Session": session,
                "Problem": problem,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/run": {
                "post": {
                    "operationId": "run",
                    "summary": 'Run input on a session: "new", an id, or none (one-shot: start, run, close).',
                    "parameters": [
                        *namespace,
                        {
                            "name": CALL_ID_HEADER,
                            "in": "header",
                            "schema": {"type": "string", "pattern": CALL_ID.pattern},
                            "description": "The call's id, the same on every retry: the worker runs it once.",
                        },
                    ],
                    "requestBody": {"required": True, **_json(_ref("RunRequest"))},
                    "responses": {
                        "200": {
                            "description": "The output; with stream, SSE: session, output..., then done or error.",
                            "content": {
                                "application/json": {"schema": _ref("RunReply")},
                                "text/event-stream": {"schema": SSE_EVENT},
                            },
                        },
                        **_problems(
                            *AUTH,
                            *LOOKUP,
                            "APP_MISMATCH",
                            "APP_NOT_FOUND",
                            "CALL_ALREADY_RAN",
                            "IDEMPOTENCY_KEY_REUSED",
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
                    "operationId": "listSessions",
                    "summary": "Sessions of the namespace (query app= to filter).",
                    "parameters": [
                        *namespace,
                        {
                            "name": "app",
                            "in": "query",
                            "schema": {"type": "string"},
                            "description": "Only this App's.",
                        },
                    ],
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
                    "operationId": "createSession",
                    "summary": "Start a session without a call; answers once it is Ready.",
                    "parameters": namespace,
                    "requestBody": {"required": True, **_json(_ref("CreateSessionRequest"))},
                    "responses": {
                        "201": {
                            "description": "The Ready session.",
                            **_json(_ref("Session")),
                            "links": LINKS,
                        },
                        **_problems(*AUTH, "APP_NOT_FOUND", "PAYLOAD_TOO_LARGE", "WORKER_UNAVAILABLE"),
                    },
                },
            },
            "/v1/sessions/{id}": {
                "get": {
                    "operationId": "getSession",
                    "summary": "One session, finished ones included while their tombstone lasts; a Ready "
                    "one with its worker's live last_activity, expires_at and calls.",
                    "parameters": [SESSION_ID, *namespace],
                    "responses": {
                        "200": {"description": "The session.", **_json(_ref("Session"))},
                        **_problems(*AUTH, "SESSION_NOT_FOUND"),
                    },
                },
                "delete": {
                    "operationId": "deleteSession",
                    "summary": "Close the session: its worker stops.",
                    "parameters": [SESSION_ID, *namespace],
                    "responses": {
                        "204": {"description": "Closed (or already finished)."},
                        **_problems(*AUTH, "SESSION_NOT_FOUND"),
                    },
                },
            },
            "/v1/sessions/{id}/keepalive": {
                "post": {
                    "operationId": "keepaliveSession",
                    "summary": "Count as activity without a call (RBAC verb patch); a suspended session's "
                    "keep time starts again, without waking it.",
                    "parameters": [SESSION_ID, *namespace],
                    "responses": {
                        "200": {
                            "description": "The session with its new deadline.",
                            **_json(_ref("Session")),
                        },
                        **_problems(*AUTH, *LOOKUP, "WORKER_UNAVAILABLE", "CALL_TIMEOUT"),
                    },
                }
            },
            **{
                f"/v1/sessions/{{id}}/{action}": {
                    "post": {
                        "operationId": f"{action}Session",
                        "summary": summary,
                        "parameters": [SESSION_ID, *namespace],
                        "responses": {
                            "202": {
                                "description": "Asked; the session as it stands now.",
                                **_json(_ref("Session")),
                            },
                            **_problems(*AUTH, *LOOKUP),
                        },
                    }
                }
                for action, summary in (
                    (
                        "suspend",
                        "Suspend the session once no call runs: its app saves its state, its worker stops "
                        "(RBAC verb patch; the App must have spec.suspend.enabled).",
                    ),
                    ("resume", "Resume a suspended session (a call resumes it too; RBAC verb patch)."),
                )
            },
            **_compat_paths(apps),
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
