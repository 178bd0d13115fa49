"""``StoreConfig`` (from the environment) and the store's errors: nothing of botocore, so a
process with no store configured never loads it (about 20 MB of RSS: docs/performance.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kubesessions.api.names import STATE_STORE_ENV_PREFIX, STATE_STORE_KEYS

DEFAULT_REGION = "us-east-1"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # S3's own limit for SigV4 query signatures


class StoreConfigError(ValueError):
    """The environment describes a store only in part, or wrongly."""


class StoreError(Exception):
    """The store answered with an error, or could not be reached."""


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str  # the URL pods reach the store at: presigned URLs carry it
    bucket: str
    region: str
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig | None:
        """From ``KUBESESSIONS_STATE_STORE_{ENDPOINT,BUCKET,REGION,ACCESS_KEY_ID,SECRET_ACCESS_KEY}``;
        None when none is set (no store: suspend is unavailable). REGION may be left out."""
        env = os.environ if environ is None else environ
        values = {key: env.get(STATE_STORE_ENV_PREFIX + key, "").strip() for key in STATE_STORE_KEYS}
        if not any(values.values()):
            return None
        missing = [STATE_STORE_ENV_PREFIX + k for k, v in values.items() if not v and k != "REGION"]
        if missing:
            raise StoreConfigError(f"the state store is configured only in part: set {', '.join(missing)}")
        endpoint = urlsplit(values["ENDPOINT"])
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise StoreConfigError(
                f"{STATE_STORE_ENV_PREFIX}ENDPOINT must be an http(s) URL, got {values['ENDPOINT']!r}"
            )
        return cls(
            endpoint=values["ENDPOINT"].rstrip("/"),
            bucket=values["BUCKET"],
            region=values["REGION"] or DEFAULT_REGION,
            access_key_id=values["ACCESS_KEY_ID"],
            secret_access_key=values["SECRET_ACCESS_KEY"],
        )
