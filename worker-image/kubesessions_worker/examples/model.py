"""Model: heavy work once in ``setup``, cheap calls after, like loading weights.

``setup`` builds a random ``size`` x ``size`` matrix (config ``{"size": 2000}``) and inverts
it; each call then solves ``A x = b`` for a ``b`` made from ``{"seed": n}`` with the stored
inverse, a matrix-vector product. Needs the ``examples`` extra (NumPy).
"""

import time
from typing import Any

import numpy as np


class Model:
    def setup(self, config: dict[str, Any]) -> None:
        started = time.perf_counter()
        size = int(config.get("size", 2000))
        rng = np.random.default_rng(0)
        self.matrix = rng.standard_normal((size, size))
        self.inverse = np.linalg.inv(self.matrix)
        self.setup_seconds = time.perf_counter() - started

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        b = np.random.default_rng(int(input.get("seed", 0))).standard_normal(self.matrix.shape[0])
        x = self.inverse @ b
        residual = float(np.linalg.norm(self.matrix @ x - b))
        return {
            "x0": float(x[0]),
            "residual": residual,
            "setupSeconds": round(self.setup_seconds, 3),
            "runSeconds": round(time.perf_counter() - started, 6),
        }
