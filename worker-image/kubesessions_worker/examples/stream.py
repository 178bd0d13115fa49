"""Stream: yields the words of ``{"text": ...}`` one at a time, like tokens from a model.

Async on purpose: it shows the other half of the contract (sync apps run on a thread).
``{"delay": seconds}`` paces the tokens.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any


class Stream:
    async def run(self, input: dict[str, Any]) -> AsyncIterator[str]:
        delay = float(input.get("delay", 0))
        for token in str(input.get("text", "")).split():
            yield token
            await asyncio.sleep(delay)
