"""Counter: state that lives between calls.

``{"add": n}`` adds to a running total (``{}`` adds 1); ``{"action": "cleanup"}`` answers with
the final total and ends the session. Two more functions share that state: ``peek`` answers the
total without counting a call, ``reset`` sets it (``{"to": n}``, default 0). ``"delay": s`` in
``run``'s input makes a call take s seconds (to test what happens to calls in flight).
Suspendable: ``suspend`` keeps the total and the call count in ``counter.json``.
"""

import json
import logging
import time
from pathlib import Path
from typing import Any

from kubesessions_worker import end_session, function

log = logging.getLogger(__name__)


class Counter:
    def setup(self, config: dict[str, Any]) -> None:
        self.total = int(config.get("start", 0))
        self.calls = 0

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        time.sleep(float(input.get("delay", 0)))
        if input.get("action") == "cleanup":
            end_session()
            return {"total": self.total, "calls": self.calls, "closing": True}
        self.total += int(input.get("add", 1))
        return {"total": self.total, "calls": self.calls}

    @function
    def peek(self, input: dict[str, Any]) -> dict[str, Any]:
        return {"total": self.total, "calls": self.calls}

    @function
    def reset(self, input: dict[str, Any]) -> dict[str, Any]:
        self.total = int(input.get("to", 0))
        return {"total": self.total, "calls": self.calls}

    def suspend(self, dir: Path) -> None:
        (dir / "counter.json").write_text(json.dumps({"total": self.total, "calls": self.calls}))

    def resume(self, dir: Path) -> None:
        saved = json.loads((dir / "counter.json").read_text())
        self.total, self.calls = int(saved["total"]), int(saved["calls"])

    def close(self) -> None:
        log.info("counter closed at %d after %d calls", self.total, self.calls)
