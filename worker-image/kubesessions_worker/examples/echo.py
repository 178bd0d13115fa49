"""Echo: returns its input. The smallest app there is."""

from typing import Any


class Echo:
    def run(self, input: Any) -> Any:
        return input
