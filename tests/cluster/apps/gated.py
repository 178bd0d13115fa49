"""The counter, with a suspend and a resume a test can hold inside the app (to kill a process
there): while ``$GATE_DIR/hold-suspend`` (``hold-resume``) exists, the app's suspend (resume)
waits, after marking ``suspend-started`` (``resume-started``) in that folder. Each resume the app runs
appends a line to ``$GATE_DIR/resumed`` (a resume that ran twice shows). ``probe`` tries a URL
from inside the worker, as the app's own code could (what a session may reach of the store)."""

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubesessions_worker import function
from kubesessions_worker.examples.counter import Counter

GATE = Path(os.environ["GATE_DIR"])


def _hold(step: str) -> None:
    (GATE / f"{step}-started").touch()
    while (GATE / f"hold-{step}").exists():
        time.sleep(0.05)


class GatedCounter(Counter):
    def suspend(self, dir: Path) -> None:
        (dir / "partial").write_text("written before the hold: a state cut here is never used")
        _hold("suspend")
        super().suspend(dir)

    def resume(self, dir: Path) -> None:
        super().resume(dir)
        _hold("resume")
        with (GATE / "resumed").open("a") as f:
            f.write(f"{self.total}\n")

    @function
    def probe(self, input: dict[str, Any]) -> int:
        """``{"url", "method"}``: the HTTP status the worker gets (a PUT sends a few bytes)."""
        method = input["method"]
        data = b"written by another session" if method == "PUT" else None
        request = urllib.request.Request(input["url"], data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code
