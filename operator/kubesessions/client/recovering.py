"""A session that comes back: when it has expired or ended, start a new one and replay the call.

The reference's recovery pattern, packaged. Replaying is only right when the app's state can
be rebuilt from ``init`` (the new worker starts empty), so it happens only when asked for.
"""

from __future__ import annotations

from typing import Any

from .errors import SessionNotFound
from .sync import Client


class RecoveringSession:
    """``run(input)`` on one session; on "session not found" (expired, ended), recover if ``recover``."""

    def __init__(
        self, client: Client, app: str, timeout: int | None = None, init: Any = None, recover: bool = True
    ) -> None:
        self.client, self.app, self.timeout, self.init, self.recover = client, app, timeout, init, recover
        self.session_id: str | None = None
        self.recoveries = 0

    def ensure_session(self) -> str:
        if self.session_id is None:
            if self.init is None:
                self.session_id = self.client.create_session(self.app, self.timeout)["session_id"]
            else:
                self.session_id = self.client.run(self._params(self.init, "new"))["session_id"]
        return self.session_id

    def run(self, input: Any) -> dict[str, Any]:
        try:
            return self.client.run(self._params(input, self.ensure_session()))
        except SessionNotFound:
            if not self.recover:
                raise
            self.session_id = None
            self.recoveries += 1
            return self.client.run(self._params(input, self.ensure_session()))

    def close(self) -> None:
        if self.session_id is not None:
            self.client.close_session(self.session_id)
            self.session_id = None

    def _params(self, input: Any, session: str) -> dict[str, Any]:
        return {"app": self.app, "input": input, "session": session, "session_timeout": self.timeout}
