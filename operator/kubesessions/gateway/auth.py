"""Who is calling, and may they do this to sessions here? Asked of the API server, answers cached briefly.

A caller's bearer token goes through a TokenReview (who is this?), and each request through a
SubjectAccessReview for the verb it performs on ``sessions.kubesessions.io`` in its namespace,
as `kubectl` would be checked: ``create`` to run on a new session, ``get`` to call or read one,
``list`` to list, ``delete`` to close, ``patch`` to keep one alive (as `kubectl annotate` does).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from kubernetes_asyncio import client

from kubesessions.api.names import GROUP
from kubesessions.gateway.problems import Problem, api_server

log = logging.getLogger("kubesessions.gateway")
Verb = Literal["create", "get", "list", "delete", "patch"]
A = TypeVar("A")


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


ANONYMOUS = Identity("anonymous (auth disabled)")


class Authorizer(Protocol):
    async def authenticate(self, token: str | None) -> Identity: ...

    async def authorize(self, token: str, identity: Identity, namespace: str, verb: Verb) -> None: ...


class NoAuth:
    """`--auth none`: everyone is allowed. For a laptop, never for a shared cluster."""

    def __init__(self) -> None:
        log.warning(
            "AUTHENTICATION IS DISABLED (--auth none): anyone who can reach this gateway can start, "
            "call and close sessions. Use this for local development only."
        )

    async def authenticate(self, token: str | None) -> Identity:
        return ANONYMOUS

    async def authorize(self, token: str, identity: Identity, namespace: str, verb: Verb) -> None:
        return None


class KubernetesAuth:
    """TokenReview + SubjectAccessReview, each answer kept for ``ttl`` seconds (denials shorter);
    a review the API server does not answer within ``timeout`` seconds is a 503 (as is its
    failing): an answer about the API server, not about the caller, so it is not kept."""

    def __init__(
        self,
        api: client.ApiClient,
        ttl: float = 10.0,
        denied_ttl: float = 2.0,
        size: int = 4096,
        timeout: float = 10.0,
    ) -> None:
        self.authn = client.AuthenticationV1Api(api)
        self.authz = client.AuthorizationV1Api(api)
        self.ttl, self.denied_ttl, self.size, self.timeout = ttl, denied_ttl, size, timeout
        # (sha256(token),) or (sha256(token), namespace, verb) -> (expires at, the answer)
        self._cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._reviews: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self.hits = self.misses = 0

    async def authenticate(self, token: str | None) -> Identity:
        if not token:
            raise Problem("UNAUTHORIZED", "a bearer token is required: 'Authorization: Bearer <token>'")
        return await self._answer((_digest(token),), lambda: self._review_token(token))

    async def authorize(self, token: str, identity: Identity, namespace: str, verb: Verb) -> None:
        key = (_digest(token), namespace, verb)
        await self._answer(key, lambda: self._review_access(identity, namespace, verb))

    async def _answer(self, key: tuple[str, ...], review: Callable[[], Awaitable[A | Problem]]) -> A:
        """The cached answer, or one review for all the calls that ask at once; a Problem is raised."""
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            self.hits += 1
            answer = cached[1]
        else:
            # One review per question at a time: the calls that wait for it resume in the order
            # they came (separate reviews finish in any order, and calls on one session must
            # keep their arrival order through the gateway).
            pending = self._reviews.get(key)
            if pending is None:
                self.misses += 1
                pending = self._reviews[key] = asyncio.ensure_future(self._review_and_keep(key, review))
            answer = await asyncio.shield(pending)
        if isinstance(answer, Problem):
            raise answer
        result: A = answer
        return result

    async def _review_and_keep(self, key: tuple[str, ...], review: Callable[[], Awaitable[Any]]) -> Any:
        try:
            answer = await review()
        finally:
            del self._reviews[key]
        now = time.monotonic()
        if len(self._cache) >= self.size:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            if len(self._cache) >= self.size:
                self._cache.clear()
        self._cache[key] = (now + (self.denied_ttl if isinstance(answer, Problem) else self.ttl), answer)
        return answer

    async def _review_token(self, token: str) -> Identity | Problem:
        with api_server("reviewing the bearer token"):
            review: Any = await self.authn.create_token_review(
                client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)),
                _request_timeout=self.timeout,
            )
        status = review.status
        if not status or not status.authenticated:
            reason = (status.error if status else None) or "the token is not valid"
            return Problem("UNAUTHORIZED", f"the bearer token was not accepted: {reason}")
        user = status.user
        return Identity(
            username=user.username or "",
            groups=tuple(user.groups or ()),
            uid=user.uid or "",
            extra=tuple((k, tuple(v)) for k, v in sorted((user.extra or {}).items())),
        )

    async def _review_access(self, identity: Identity, namespace: str, verb: Verb) -> bool | Problem:
        spec = client.V1SubjectAccessReviewSpec(
            user=identity.username,
            groups=list(identity.groups),
            uid=identity.uid,
            extra={k: list(v) for k, v in identity.extra},
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, group=GROUP, resource="sessions"
            ),
        )
        with api_server(f"asking whether {identity.username} may {verb} sessions"):
            access: Any = await self.authz.create_subject_access_review(
                client.V1SubjectAccessReview(spec=spec), _request_timeout=self.timeout
            )
        if not access.status.allowed:
            return Problem(
                "FORBIDDEN", f'{identity.username} may not {verb} sessions.{GROUP} in namespace "{namespace}"'
            )
        return True


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
