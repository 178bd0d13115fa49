"""Session tokens derived from one key: HMAC-SHA256 of the Session's namespace, name and uid.

The operator writes each Session's token into the Session's Secret (the worker's env reads it
from there); the gateway derives the same token from the key it holds, so it reads no Secret
at all. The uid makes a Session re-created under the same name a different token.
Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

KEY_BYTES = 32


def new_key() -> bytes:
    """A fresh key (each process's default: tokens then agree only within it)."""
    return secrets.token_bytes(KEY_BYTES)


def session_token(key: bytes, namespace: str, name: str, uid: str) -> str:
    message = json.dumps(["session", namespace, name, uid]).encode()  # fields cannot run together
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
