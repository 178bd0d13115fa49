"""The inference.sh SDK's task status values this gateway uses (its ``TaskStatus``), shared by
the tasks a replica keeps (:mod:`.compat`) and those it reads from a worker (:mod:`.remotetasks`)."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """The SDK's TaskStatus values this gateway uses."""

    QUEUED = 2
    SETTING_UP = 6
    RUNNING = 7
    COMPLETED = 10
    FAILED = 11
    CANCELLED = 12


TERMINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
