"""Model: a scikit-learn classifier loaded once in ``setup``, ``predict`` many times.

The weights are a file, named by config ``{"weights": "<path>"}`` or the ``MODEL_PATH``
environment variable, loaded with ``joblib.load``: the code you keep when you bring your own
model. No model hub is reachable where this was built, so the example's weights are made from
scikit-learn's own shipped dataset (``load_digits``: 8x8 images of digits, 1797 of them) by
:func:`train`: deterministically (``random_state``), at image build time (see the Dockerfile), or
on the first ``setup`` when the file is missing (the process node). joblib files are pickles:
load only weights you trust (``skops.io`` is the safer format for weights from elsewhere).

``predict`` (and ``run``): ``{"images": [[64 pixel values 0..16], ...]}`` ->
``{"labels": [...], "probabilities": [[10 floats], ...]}``.

Not suspendable, on purpose: a session holds nothing of its own beyond the weights every worker
of the App loads in ``setup`` (each ``predict`` stands alone), so there is no state to save: its
idle sessions end as before, and an App that enables suspend says in its status that this app
has no ``suspend``/``resume``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier

from kubesessions_worker import function

DEFAULT_WEIGHTS = "digits-forest.joblib"


def train(path: str | Path) -> Path:
    """Fit the example classifier on ``load_digits`` and save it to ``path`` (atomically)."""
    digits = load_digits()
    model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1)
    model.fit(digits.data, digits.target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    joblib.dump(model, partial)
    partial.rename(path)
    return path


def weights_path(config: dict[str, Any]) -> Path:
    named = config.get("weights") or os.environ.get("MODEL_PATH")
    return Path(named) if named else Path(tempfile.gettempdir()) / DEFAULT_WEIGHTS


class ModelApp:
    setup_runs = 0

    def setup(self, config: dict[str, Any]) -> None:
        started = time.perf_counter()
        path = weights_path(config)
        if not path.exists():
            if not config.get("trainIfMissing", True):
                raise FileNotFoundError(f"weights file {path} not found (config weights or MODEL_PATH)")
            train(path)
        self.model = joblib.load(path)  # your own weights: the same line
        self.weights = str(path)
        ModelApp.setup_runs += 1
        self.setup_at = time.time()
        self.setup_seconds = time.perf_counter() - started

    @function
    def predict(self, input: dict[str, Any]) -> dict[str, Any]:
        images = np.asarray(input.get("images", []), dtype=np.float64)
        if images.ndim != 2 or images.shape[1] != self.model.n_features_in_:
            raise ValueError(f"images must be a list of rows of {self.model.n_features_in_} numbers")
        probabilities = self.model.predict_proba(images)
        return {
            "labels": [int(self.model.classes_[i]) for i in probabilities.argmax(axis=1)],
            "probabilities": probabilities.round(6).tolist(),
            "setupRuns": ModelApp.setup_runs,
            "setupAt": self.setup_at,
            "setupSeconds": round(self.setup_seconds, 3),
        }

    def run(self, input: dict[str, Any]) -> dict[str, Any]:
        return self.predict(input)
