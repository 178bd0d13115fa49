"""Slow: sleeps ``{"seconds": n}`` then answers; for queue, timeout and idle tests."""

import time
from typing import Any


class Slow:
    def run(self, input: dict[str, Any]) -> dict[str, float]:
        seconds = float(input.get("seconds", 1))
        time.sleep(seconds)  # blocking on purpose: sync apps run on their own thread
        return {"slept": seconds}
