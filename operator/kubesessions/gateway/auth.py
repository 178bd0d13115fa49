"""Who is calling, and may they use sessions here? Asked of the API server, answers cached briefly.

A caller's bearer token goes through a TokenReview (who is this?) and a SubjectAccessReview
(may they create sessions.kubesessions.io in this namespace?), as `kubectl` would be checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client

from ..models import GROUP
from .problems import Problem

log = logging.getLogger("kubesessions.gateway")


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


ANONYMOUS = Identity("anonymous (auth disabled)")


class Authorizer(Protocol):
    async def check(self, token: str | None, namespace: str) -> Identity: ...


class NoAuth:
    """`--auth none`: everyone is allowed. For a laptop, never for a shared cluster."""

    def __init__(self) -> None:
        log.warning(
            "AUTHENTICATION IS DISABLED (--auth none): anyone who can reach this gateway can start, "
            "call and close sessions. Use this for local development only."
        )

    async def check(self, token: str | None, namespace: str) -> Identity:
        return ANONYMOUS


class KubernetesAuth:
    """TokenReview + SubjectAccessReview, each answer kept for ``ttl`` seconds (denials shorter)."""

    def __init__(
        self, api: client.ApiClient, ttl: float = 10.0, denied_ttl: float = 2.0, size: int = 4096
    ) -> None:
        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.ttl, self.denied_ttl, self.size = ttl, denied_ttl, size
        # sha256(token), namespace -> (expires at, identity or the problem to raise)
        self._cache: dict[tuple[str, str], tuple[float, Identity | Problem]] = {}
        self._reviews: dict[tuple[str, str], asyncio.Future[Identity | Problem]] = {}
        self.hits = self.misses = 0

    async def check(self, token: str | None, namespace: str) -> Identity:
        if not token:
            raise Problem("UNAUTHORIZED", "a bearer token is required: 'Authorization: Bearer <token>'")
        key = (hashlib.sha256(token.encode()).hexdigest(), namespace)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self.hits += 1
            answer = cached[1]
        else:
            # One review per token at a time: the calls that wait for it resume in the order
            # they came (separate reviews finish in any order, and calls on one session must
            # keep their arrival order through the gateway).
            review = self._reviews.get(key)
            if review is None:
                self.misses += 1
                review = self._reviews[key] = asyncio.ensure_future(
                    self._review_and_keep(key, token, namespace)
                )
            answer = await asyncio.shield(review)
        if isinstance(answer, Problem):
            raise answer
        return answer

    async def _review_and_keep(self, key: tuple[str, str], token: str, namespace: str) -> Identity | Problem:
        try:
            answer = await self._review(token, namespace)
        finally:
            del self._reviews[key]
        now = time.monotonic()
        if len(self._cache) >= self.size:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self.size:
                self._cache.clear()
        self._cache[key] = (now + (self.denied_ttl if isinstance(answer, Problem) else self.ttl), answer)
        return answer

    async def _review(self, token: str, namespace: str) -> Identity | Problem:
        review: Any = await self.authn.create_token_review(
            client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
        )
        status = review.status
        if not status or not status.authenticated:
            reason = (status.error if status else None) or "the token is not valid"
            return Problem("UNAUTHORIZED", f"the bearer token was not accepted: {reason}")
        user = status.user
        identity = Identity(
            username=user.username or "",
            groups=tuple(user.groups or ()),
            uid=user.uid or "",
            extra=tuple((k, tuple(v)) for k, v in sorted((user.extra or {}).items())),
        )
        spec = client.V1SubjectAccessReviewSpec(
            user=identity.username,
            groups=list(identity.groups),
            uid=identity.uid,
            extra={k: list(v) for k, v in identity.extra},
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb="create", group=GROUP, resource="sessions"
            ),
        )
        access: Any = await self.authz.create_subject_access_review(client.V1SubjectAccessReview(spec=spec))
        if not access.status.allowed:
            return Problem(
                "UNAUTHORIZED",
                f'{identity.username} may not create sessions.{GROUP} in namespace "{namespace}"',
                status=403,
            )
        return identity
