"""``StateStore``: presign, delete, list, the bucket, through botocore (imported only here)."""

from __future__ import annotations

import asyncio
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .config import MAX_PRESIGN_SECONDS, StoreConfig, StoreError


class StateStore:
    """One bucket of an S3-compatible store. botocore's client is thread-safe, so the async
    methods share it from worker threads."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self._s3: Any = botocore.session.Session().create_client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                signature_version="s3v4",
                # Path style: the endpoint is a plain host:port (an in-cluster Service, a pod's
                # view of the local cluster's store), with no wildcard DNS for bucket names.
                s3={"addressing_style": "path"},
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )

    def presign_put(self, key: str, seconds: int = 300) -> str:
        """A URL that lets its holder PUT exactly ``key``, for ``seconds``."""
        return self._presign("put_object", key, seconds)

    def presign_get(self, key: str, seconds: int = 300) -> str:
        """A URL that lets its holder GET exactly ``key``, for ``seconds``."""
        return self._presign("get_object", key, seconds)

    def _presign(self, operation: str, key: str, seconds: int) -> str:
        if not 1 <= seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"seconds must be in 1..{MAX_PRESIGN_SECONDS}, got {seconds}")
        url: str = self._s3.generate_presigned_url(
            operation, Params={"Bucket": self.config.bucket, "Key": key}, ExpiresIn=seconds
        )
        return url

    async def delete(self, key: str) -> None:
        """Delete ``key``; a key that is not there is fine (S3 answers 204 either way)."""
        await self._call("delete_object", Bucket=self.config.bucket, Key=key)

    async def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (all pages)."""
        return await asyncio.to_thread(self._keys, prefix)

    def _keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=prefix
            ):
                found.extend(item["Key"] for item in page.get("Contents", []))
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(f"listing {prefix!r} in bucket {self.config.bucket!r} failed: {exc}") from exc
        return found

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it is there (and ours)."""
        try:
            await self._call("head_bucket", Bucket=self.config.bucket)
            return
        except StoreError as exc:
            if not _status(exc.__cause__, 404):
                raise
        try:
            await self._call("create_bucket", Bucket=self.config.bucket)
        except StoreError as exc:
            if _code(exc.__cause__) != "BucketAlreadyOwnedByYou":  # made meanwhile, by us
                raise

    async def _call(self, operation: str, **params: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._s3, operation), **params)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(
                f"{operation} on {self.config.endpoint}/{self.config.bucket} failed: {exc}"
            ) from exc

    def close(self) -> None:
        self._s3.close()


def _code(exc: BaseException | None) -> str | None:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


def _status(exc: BaseException | None, status: int) -> bool:
    return (
        isinstance(exc, ClientError)
        and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == status
    )
