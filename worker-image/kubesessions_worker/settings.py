"""Typed settings of one worker: the operator's environment, overridden by command-line flags.

Read once by the CLI at start-up (``Settings.load``), never at import time, so tests and
embedders build a ``Settings`` directly.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubesessions.api.names import WORKER_PORT

N = TypeVar("N", int, float)


class SettingsError(ValueError):
    """The environment or the flags do not describe a runnable worker."""


@dataclass(frozen=True)
class Settings:
    session_id: str
    app: str
    token: str = field(repr=False)  # never printed, not even in a debug dump of the settings
    session_timeout: int = 60
    config: Mapping[str, Any] = field(default_factory=dict)
    host: str = "0.0.0.0"  # noqa: S104 - the pod IP is the usual bind address; this is the fallback
    port: int = WORKER_PORT
    queue_size: int = 16
    call_timeout: float = 600.0
    idle_grace: float = 60.0
    # A warm pool worker: the token is its App's pool token until POST /claim hands it a session.
    pool: bool = False
    termination_message_path: Path = Path("/dev/termination-log")
    # Not part of the operator's contract: tuning knobs with safe defaults, flags only.
    max_body_bytes: int = 32 * 1024 * 1024
    stop_grace: float = 25.0  # under Kubernetes' default 30 s termination grace period
    call_grace: float = 30.0  # past the call timeout, before a stuck app thread ends the session
    # The retry window: a keyed call's id and outcome are kept this long after it finished ...
    call_retention: float = 600.0
    call_retention_bytes: int = 16 * 1024 * 1024  # ... within this many bytes of outcomes in all
    gpu_interval: float = 5.0
    log_level: str = "INFO"

    @classmethod
    def load(cls, argv: Sequence[str] | None, environ: Mapping[str, str]) -> Settings:
        """Environment first, then flags on top (the contract in docs/worker-contract.md)."""
        args = _parser().parse_args(argv)

        def pick(flag: Any, env: str, default: str | None = None) -> str | None:
            return str(flag) if flag is not None else environ.get(env, default)

        session_id = pick(args.session_id, "SESSION_ID")
        app = pick(args.app, "KUBESESSIONS_APP")
        token = environ.get("KUBESESSIONS_SESSION_TOKEN")
        missing = [
            name
            for name, value in (
                ("SESSION_ID", session_id),
                ("KUBESESSIONS_APP", app),
                ("KUBESESSIONS_SESSION_TOKEN", token),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"required setting(s) missing: {', '.join(missing)}")
        assert session_id and app and token  # narrowed by the check above
        if ":" not in app:
            raise SettingsError(f"KUBESESSIONS_APP must look like package.module:Class, got {app!r}")
        timeout = _number(pick(args.session_timeout, "SESSION_TIMEOUT", "60"), "SESSION_TIMEOUT", int)
        if not 1 <= timeout <= 3600:
            raise SettingsError(f"SESSION_TIMEOUT must be 1..3600 seconds, got {timeout}")
        return cls(
            session_id=session_id,
            app=app,
            token=token,
            session_timeout=timeout,
            config=_config(pick(args.config, "KUBESESSIONS_CONFIG", "{}") or "{}"),
            host=pick(args.host, "POD_IP") or "0.0.0.0",  # noqa: S104 - see the field's default
            port=_bounded(
                pick(args.port, "KUBESESSIONS_PORT", str(WORKER_PORT)), "KUBESESSIONS_PORT", int, 0, 65535
            ),
            queue_size=_bounded(
                pick(args.queue_size, "KUBESESSIONS_QUEUE_SIZE", "16"), "KUBESESSIONS_QUEUE_SIZE", int
            ),
            call_timeout=_bounded(
                pick(args.call_timeout, "KUBESESSIONS_CALL_TIMEOUT", "600"),
                "KUBESESSIONS_CALL_TIMEOUT",
                float,
            ),
            idle_grace=_bounded(
                pick(args.idle_grace, "KUBESESSIONS_IDLE_GRACE", "60"), "KUBESESSIONS_IDLE_GRACE", float
            ),
            pool=_flag(environ.get("KUBESESSIONS_POOL", "false"), "KUBESESSIONS_POOL"),
            termination_message_path=Path(
                pick(args.termination_message_path, "KUBESESSIONS_TERMINATION_MESSAGE_PATH")
                or "/dev/termination-log"
            ),
            max_body_bytes=_bounded(args.max_body_bytes, "--max-body-bytes", int, 1),
            stop_grace=_bounded(args.stop_grace, "--stop-grace", float),
            call_grace=_bounded(args.call_grace, "--call-grace", float),
            call_retention=_bounded(args.call_retention, "--call-retention", float),
            call_retention_bytes=_bounded(args.call_retention_bytes, "--call-retention-bytes", int),
            gpu_interval=_bounded(args.gpu_interval, "--gpu-interval", float, 0.1),
            log_level=args.log_level.upper(),
        )


def termination_path(argv: Sequence[str] | None, environ: Mapping[str, str]) -> Path:
    """Where to report a failure even when the rest of the settings are unusable."""
    args, _ = _parser(add_help=False).parse_known_args(argv)  # --help must not exit here
    return Path(
        args.termination_message_path
        or environ.get("KUBESESSIONS_TERMINATION_MESSAGE_PATH")
        or "/dev/termination-log"
    )


# Tuning knobs, flags only (not part of the operator's contract): the default is the field's.
TUNING = (
    ("--max-body-bytes", "largest request body"),
    ("--stop-grace", "seconds the running call and close() get on stop"),
    ("--call-grace", "seconds a call's code may go on past the call timeout before the session ends"),
    ("--call-retention", "seconds a finished call's Idempotency-Key and outcome are kept for a retry"),
    ("--call-retention-bytes", "bytes of outcomes kept for retries (older ones keep only their id)"),
    ("--gpu-interval", "seconds between GPU samples"),
)


def _parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubesessions-worker",
        add_help=add_help,
        description=(
            "Serve one kube-sessions session: load the app class, answer calls one at a time. "
            "Flags override the environment; the token is only read from KUBESESSIONS_SESSION_TOKEN "
            "because command lines are visible to every process on the machine."
        ),
    )
    # Flags default to None so that "not given" falls through to the environment.
    p.add_argument("--app", help="the app class, package.module:Class (KUBESESSIONS_APP)")
    p.add_argument("--session-id", help="the session's name (SESSION_ID)")
    p.add_argument("--session-timeout", help="idle timeout in whole seconds, 1..3600 (SESSION_TIMEOUT)")
    p.add_argument("--config", help="JSON object handed to setup(config) (KUBESESSIONS_CONFIG)")
    p.add_argument("--host", help="address to bind (POD_IP)")
    p.add_argument("--port", help="port to listen on, 0 picks a free one (KUBESESSIONS_PORT)")
    p.add_argument(
        "--queue-size", help="calls that may wait behind the running one (KUBESESSIONS_QUEUE_SIZE)"
    )
    p.add_argument(
        "--call-timeout", help="seconds one call may run, 0 = no limit (KUBESESSIONS_CALL_TIMEOUT)"
    )
    p.add_argument("--idle-grace", help="exit when idle longer than timeout + this (KUBESESSIONS_IDLE_GRACE)")
    p.add_argument("--termination-message-path", help="(KUBESESSIONS_TERMINATION_MESSAGE_PATH)")
    for flag, text in TUNING:
        default = getattr(Settings, flag.removeprefix("--").replace("-", "_"))
        p.add_argument(flag, default=str(default), help=f"{text} (default {default})")
    p.add_argument("--log-level", default=Settings.log_level, help="DEBUG, INFO, WARNING or ERROR")
    return p


def _number(raw: str | None, name: str, kind: type[N]) -> N:
    if raw is None:
        raise SettingsError(f"{name} is required")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


def _bounded(raw: str | None, name: str, kind: type[N], low: float = 0, high: float = float("inf")) -> N:
    value = _number(raw, name, kind)
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {value}")
    return value


def _flag(raw: str, name: str) -> bool:
    if raw.lower() not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw.lower() == "true"


def _config(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"KUBESESSIONS_CONFIG is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise SettingsError("KUBESESSIONS_CONFIG must be a JSON object")
    return value
