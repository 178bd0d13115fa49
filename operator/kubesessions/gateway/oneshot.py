"""A one-shot call's outcome, kept on its Session by the patch that closes it.

A call made without a session (``/v1/run`` with no ``session``, an inference.sh task without
one) gets a session of its own, named after its call id, and closed as soon as the call is
over; its worker, and the outcome the worker kept, go with it. So the gateway that closes it
first reads the worker's view of the call (``GET /calls/{id}``) and writes it in an annotation
in the same patch as the close: the session is never closed with its outcome unrecorded. For
as long as the Session stays as a tombstone (the operator's retention, 10 minutes by default),
a retry of the call (its session is found by name) and a read of its task through any replica
(every replica's watch cache holds the Session) get that outcome.

The annotation is bounded (``limit`` bytes, a gateway setting): outputs larger than that are
left out and the record says how large they were, so a retry of such a call is refused with
``CALL_ALREADY_RAN``, never run again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kubesessions.api.names import CALL_ID_HEADER, JSON, OUTCOME_ANNOTATION
from kubesessions.gateway.problems import Problem

DETAIL_CHARS = 1024  # of a failure's detail, when the record is over its limit


def fingerprint(function: str, input: Any) -> str:
    """Of a call's function and input, as the worker takes it: a call id names one of each."""
    return hashlib.sha256(json.dumps([function, input], sort_keys=True).encode()).hexdigest()


def failed(call_id: str, problem: JSON) -> JSON:
    """A worker's view of a call that ended with ``problem`` before the worker had it."""
    cancelled = problem.get("code") == "CANCELLED"
    return {
        "id": call_id,
        "state": "finished",
        "cancelled": cancelled,
        "streamed": False,
        "outputs": [],
        "error": problem,
    }


def record(view: JSON, print_: str | None, limit: int) -> str:
    """The annotation's value: the worker's view of the finished call, its outputs left out
    (their size said instead) when the whole is over ``limit`` bytes. ``print_`` is the call's
    fingerprint, None when the recorder does not know the input (then any input matches, as
    for a call the worker cancelled before it arrived)."""
    whole = {**view, "fingerprint": print_}
    text = json.dumps(whole, separators=(",", ":"))
    if len(text) <= limit:
        return text
    error = view.get("error")
    if isinstance(error, dict):
        error = {**error, "detail": str(error.get("detail") or "")[:DETAIL_CHARS]}
    size = len(json.dumps(view.get("outputs"), separators=(",", ":")))
    return json.dumps({**whole, "outputs": None, "error": error, "outputBytes": size, "limit": limit})


def recorded(body: JSON, call_id: str | None) -> JSON | None:
    """The outcome the Session keeps for ``call_id``; None when it keeps none for that call."""
    raw = (body["metadata"].get("annotations") or {}).get(OUTCOME_ANNOTATION)
    if call_id is None or raw is None:
        return None
    try:
        view = json.loads(raw)
    except ValueError:
        return None
    return view if isinstance(view, dict) and view.get("id") == call_id else None


def left_out(view: JSON) -> str | None:
    """Why the record has no outputs although the call did not fail; None when it has them."""
    if view.get("outputs") is not None or view.get("error") is not None:
        return None
    return (
        f"the one-shot call with {CALL_ID_HEADER} {view.get('id')!r} already ran; its output "
        f"({view.get('outputBytes')} bytes) is larger than the {view.get('limit')} bytes its Session "
        "keeps (the gateway's --one-shot-outcome-bytes), so only its first answer had it; it is not "
        "run again"
    )


def events(view: JSON, print_: str) -> bytes:
    """The call's events again, as its worker sent them (server-sent events), from the record."""
    if view.get("fingerprint") not in (None, print_):
        raise Problem(
            "IDEMPOTENCY_KEY_REUSED",
            f"the {CALL_ID_HEADER} {view.get('id')!r} was already used for a call with another input",
        )
    why = left_out(view)
    if why is not None:
        raise Problem("CALL_ALREADY_RAN", why)
    lines = [b"event: output\ndata: " + json.dumps(value).encode() for value in view.get("outputs") or ()]
    if view.get("error") is not None:
        lines.append(b"event: error\ndata: " + json.dumps(view["error"]).encode())
    else:
        lines.append(b'event: done\ndata: {"sessionClosed":true}')
    return b"".join(line + b"\n\n" for line in lines)
