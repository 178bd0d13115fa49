"""An app whose whole state is ``bytes`` random bytes (config), for bench/suspend_worker.py:
``suspend`` writes them as one file, ``resume`` reads them back, ``run`` answers their count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class Blob:
    def setup(self, config: dict[str, Any]) -> None:
        self.data = os.urandom(int(config.get("bytes", 0)))

    def run(self, input: Any) -> int:
        return len(self.data)

    def suspend(self, dir: Path) -> None:
        (dir / "blob.bin").write_bytes(self.data)

    def resume(self, dir: Path) -> None:
        self.data = (dir / "blob.bin").read_bytes()
