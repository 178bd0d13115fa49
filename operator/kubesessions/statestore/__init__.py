"""The state store: where suspended sessions' state lives, an S3-compatible object store.

A wing of its own, beside ``kube``: it imports ``api`` (the names), ``common`` and botocore
only; the operator (``control``) and the local cluster (which makes the bucket) use it. It holds
the store's credentials, and hands workers only presigned URLs, each for one session's object
and a few minutes: a worker never holds a credential that could reach another session's state.
Presigning is local (botocore signs; no network); the rest runs botocore in a thread.
"""

from .store import StateStore, StoreConfig, StoreConfigError, StoreError

__all__ = ["StateStore", "StoreConfig", "StoreConfigError", "StoreError"]
