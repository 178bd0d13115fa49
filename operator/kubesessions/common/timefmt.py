"""RFC 3339 timestamps, the one place they are written and read on the operator side.

Kubernetes wants seconds (``metav1.Time``) or microseconds (``metav1.MicroTime``); our own
annotations and status fields use milliseconds (``kubesessions.io/last-activity``).
"""

from __future__ import annotations

import datetime


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime | None = None, *, precision: str = "milliseconds") -> str:
    """``moment`` (default now) in UTC with a ``Z``; ``precision`` as for ``isoformat(timespec=)``."""
    moment = (moment or utcnow()).astimezone(datetime.UTC)
    return moment.isoformat(timespec=precision).replace("+00:00", "Z")


def parse_rfc3339(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
