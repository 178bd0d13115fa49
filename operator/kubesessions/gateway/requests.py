"""Request bodies of the gateway API, validated by the same rules the CRDs carry.

The models feed the OpenAPI document too, so the documented and the enforced shapes are one.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from base64 import b32encode
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from kubesessions.api.models import DNS1123_SUBDOMAIN, MAX_TIMEOUT, MIN_TIMEOUT, AppSpec, SessionSpec
from kubesessions.api.names import CALL_ID_HEADER
from kubesessions.gateway.problems import Problem

NEW = "new"
# What the worker takes as a call id: 1..200 printable ASCII characters (none at either end is a
# space, which HTTP would strip anyway).
CALL_ID = re.compile(r"^[\x21-\x7e]([\x20-\x7e]{0,198}[\x21-\x7e])?$")
SESSION_PREFIX = "s-"
# 15 random bytes: 120 bits, 24 base32 characters; lowercase base32 is DNS-1123 safe.
SESSION_ID = re.compile(r"^s-[a-z2-7]{24}$")
TIMEOUT_RANGE = f"a whole number of seconds, {MIN_TIMEOUT}..{MAX_TIMEOUT}"


def new_session_id(seed: str | None = None) -> str:
    """A random id; or, for a call with an Idempotency-Key, one derived from it (``seed`` names
    the namespace, the caller and the key), so that a retry of the call finds the session its
    first try created instead of starting a second one."""
    raw = hashlib.sha256(seed.encode()).digest()[:15] if seed is not None else secrets.token_bytes(15)
    return SESSION_PREFIX + b32encode(raw).decode().lower()


def _whole(value: Any) -> Any:
    """JSON has one number type, and JSON Schema's integer takes 60.0 as 60: so does the gateway."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Seconds = Annotated[int, Field(strict=True, ge=MIN_TIMEOUT, le=MAX_TIMEOUT), BeforeValidator(_whole)]


FUNCTION_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    app: StrictStr | None = Field(default=None, max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The App (in the request's namespace) to start the worker from."""
    session_timeout: Seconds | None = None
    """Idle timeout of a new session in whole seconds, 1..3600 (default: the App's)."""
    config: dict[str, Any] | None = None
    """Settings handed to the app's `setup(config)` for a new session."""


class RunRequest(_Body):
    """`POST /v1/run`."""

    input: Any = Field()
    """Whatever the app's `run(input)` takes (any JSON)."""
    session: StrictStr | None = Field(default=None, max_length=253)
    """`"new"` to start a session, a session id to continue one, absent for a one-shot call."""
    stream: StrictBool = False
    """Answer as server-sent events, one `output` event per value the app yields."""
    function: StrictStr = Field(default="run", min_length=1, max_length=128, pattern=FUNCTION_NAME)
    """Which of the app's functions to call (`run` unless the app exposes more)."""


class CreateSessionRequest(_Body):
    """`POST /v1/sessions`: start a session without a call."""

    app: StrictStr = Field(max_length=253, pattern=DNS1123_SUBDOMAIN)
    """The App (in the request's namespace) to start the worker from."""


def call_id(value: str | None) -> str | None:
    """The request's call id, checked before anything is started."""
    if value is not None and not CALL_ID.match(value):
        raise Problem("VALIDATION", f"{CALL_ID_HEADER}: must be 1..200 printable ASCII characters")
    return value


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], raw: bytes) -> M:
    try:
        data = orjson.loads(raw)  # 0.16x the standard library's time on a call's body
    except orjson.JSONDecodeError:
        # What orjson refuses and the standard library takes (integers past 64 bits, NaN) is
        # taken as before; the rest gets the standard library's message.
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than it goes
            raise Problem("VALIDATION", f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem("VALIDATION", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem("VALIDATION", describe(exc)) from None


def describe(exc: ValidationError) -> str:
    """One line per error, naming the field; timeouts also name the allowed range."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "body"
        text = f"{field}: {error['msg']}"
        if field in ("session_timeout", "sessionTimeout"):
            text += f" ({TIMEOUT_RANGE})"
        parts.append(text)
    return "; ".join(parts)


def session_spec(body: _Body, app: AppSpec) -> SessionSpec:
    """The Session's spec, checked as the API server will check it, and against the App's maximum."""
    if body.session_timeout is not None and body.session_timeout > app.maxSessionTimeout:
        raise Problem(
            "VALIDATION",
            f"session_timeout: {body.session_timeout} is over the App's maxSessionTimeout of "
            f"{app.maxSessionTimeout} ({TIMEOUT_RANGE}, at most {app.maxSessionTimeout} for app {body.app})",
        )
    try:
        return SessionSpec(app=body.app, sessionTimeout=body.session_timeout, config=body.config)
    except ValidationError as exc:
        raise Problem("VALIDATION", describe(exc)) from None
