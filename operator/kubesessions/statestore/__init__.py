"""The state store: where suspended sessions' state lives, an S3-compatible object store.

A wing of its own, beside ``kube``: it imports ``api`` (the names), ``common`` and botocore
only; the operator (``control``) and the local cluster (which makes the bucket) use it. It holds
the store's credentials, and hands workers only presigned URLs, each for one session's object
and a few minutes: a worker never holds a credential that could reach another session's state.
Presigning is local (botocore signs; no network); the rest runs botocore in a thread.
botocore is imported by ``store`` alone, which :func:`open_store` loads only for a configured
store: an operator without one (suspend unavailable) does not carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import StoreConfig, StoreConfigError, StoreError

if TYPE_CHECKING:
    from .store import StateStore

__all__ = ["StateStore", "StoreConfig", "StoreConfigError", "StoreError", "open_store"]


def open_store(config: StoreConfig) -> StateStore:
    from .store import StateStore  # botocore, about 20 MB, only where a store is configured

    return StateStore(config)
