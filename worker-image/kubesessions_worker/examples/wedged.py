"""Wedged: ``{"hang": true}`` never returns (sync code stuck on a lock, a driver, a dead peer);
anything else is echoed. Shows the call-timeout safety net: once the call is past its timeout
plus the call grace and the app's code has still not come back, the worker ends the session
(termination reason ``CallTimeout``) and exits, so the GPU is not held by a thread that
cannot be interrupted."""

import threading
from typing import Any


class Wedged:
    def setup(self) -> None:
        self.never = threading.Event()

    def run(self, input: Any) -> Any:
        if isinstance(input, dict) and input.get("hang"):
            self.never.wait()  # blocks forever, on purpose
        return input
