"""bench/stateapp.py's Blob, sized by a call (``fill``) rather than by its config: a Session with
no config can claim a warm pool worker, and a pool worker then holds no state until resumed."""

from __future__ import annotations

import os
from typing import Any

from stateapp import Blob

from kubesessions_worker import function


class SizedBlob(Blob):
    @function
    def fill(self, input: Any) -> int:
        self.data = os.urandom(int(input["bytes"]))
        return len(self.data)
