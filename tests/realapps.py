"""The example apps' reference flows (examples/data, model, chat, browser) through the gateway with
the public inference.sh SDK, each checked against the same work done in the test process: shared
by the process node's tests/cluster/test_real_apps.py and the kubelet node's
tests/e2e/test_real_apps.py (what differs is where the App's code and weights come from)."""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inferencesh import Inference

from kubesessions.api.names import SESSION_LABEL, SUSPEND_REQUESTED
from kubesessions.common.timefmt import rfc3339

from .conftest import REPO, Cluster, await_condition, await_session, phase_is

EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))
from localapps import FOLDERS  # noqa: E402 (the examples folder is no package)

# Fewer rows than the app's default 3 M: setup stays a couple of seconds on a loaded 2-core
# machine (the bench runs the full size).
DATA_ROWS = 1_000_000
DATA_ENV = {"DATA_ROWS": str(DATA_ROWS)}
CHAT_THIRDS = {
    "Ada": "Your name is Ada (you told me in turn 1).",
    "Grace": "Your name is Grace (you told me in turn 1).",
}


@contextmanager
def importable_examples() -> Iterator[None]:
    """The app modules, importable by the test process too (to do the same work outside)."""
    paths = [str(EXAMPLES / name) for name in FOLDERS]
    sys.path[:0] = paths
    try:
        yield
    finally:
        del sys.path[: len(paths)]


def call(session: Any, function: str, input: dict[str, Any]) -> dict[str, Any]:
    output: dict[str, Any] = session.call(function, input)["output"]
    return output


def data_flow(session: Any, scratch: Path) -> None:
    """In an open data session: each analysis equals the same query run here on the same dataset
    (made here in ``scratch`` from the same rows and seed)."""
    import data_app

    here = data_app.load(data_app.dataset(DATA_ROWS, 7, str(scratch)))
    asked = {
        "summary": ({}, []),
        "correlations": ({}, []),
        "outliers": ({"z": 2.5}, [2.5]),
        "trends": ({"region": "north"}, ["north", "north"]),
    }
    for name, (input, params) in asked.items():
        out = call(session, name, input)
        expected = data_app.answer(here, name, params)
        assert out["rows"] == DATA_ROWS and out["result"], (name, out)
        # Sums of floats over threads may differ in the last bits between two runs.
        assert len(out["result"]) == len(expected), (name, out["result"], expected)
        for got, want in zip(out["result"], expected, strict=True):
            assert got.keys() == want.keys(), name
            for key, value in want.items():
                close = pytest.approx(value, rel=1e-9) if isinstance(value, float) else value
                assert got[key] == close, (name, key, got, want)
    assert out["setupRuns"] == 1
    summary = data_app.answer(here, "summary")
    assert sum(r["rows"] for r in summary) == DATA_ROWS


def model_flow(sdk: Inference, weights: Path, setup: dict[str, Any]) -> str:
    """One classifier session (``setup``: its config): its predictions equal those of the weights
    file ``weights`` loaded here, and it loads once for many calls. Returns the session's id."""
    import joblib
    from sklearn.datasets import load_digits

    images = load_digits().data[::37]  # 49 images
    here = joblib.load(weights)
    result: Any = sdk.run(
        {"app": "classifier", "input": {"images": images.tolist()}, "setup": setup, "session": "new"}
    )
    out = result["output"]
    assert out["labels"] == here.predict(images).tolist()
    np.testing.assert_allclose(out["probabilities"], here.predict_proba(images), atol=1e-6)
    for _ in range(3):  # loaded once, predicted many times
        again: Any = sdk.run(
            {"app": "classifier", "input": {"images": images[:3].tolist()}, "session": result["session_id"]}
        )
        assert again["output"]["labels"] == out["labels"][:3] and again["output"]["setupRuns"] == 1
    return str(result["session_id"])


def chat_flow(sdk: Inference) -> str:
    """Two conversations, one after the other: the third answer of each names what its first turn
    said. The last one's session is left open: returns its id (the caller ends it, or kills it)."""
    thirds = {}
    last = list(CHAT_THIRDS)[-1]
    for name in CHAT_THIRDS:
        session = sdk.session("chat", input={"text": f"Hello, my name is {name}."})
        assert call(session, "init", {"system": "You are terse."})["turn"] == 0  # starts over
        first = call(session, "message", {"text": f"Hi, my name is {name} and I like tea."})
        second = call(session, "message", {"text": "How is the weather today?"})
        third = call(session, "message", {"text": "What is my name?"})
        assert (first["turn"], second["turn"], third["turn"]) == (1, 2, 3)
        thirds[name] = third["reply"]
        turns = call(session, "history", {})["turns"]
        assert [t["role"] for t in turns] == ["system"] + ["user", "assistant"] * 3
        if name != last:
            session.end()
    assert thirds == CHAT_THIRDS
    return session.session_id


def _pixels(png_b64: str) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")


def browser_flow(session: Any) -> None:
    """start, type, screenshot, click in an open browser session: the screenshot after `type`
    shows the typed text (pixels changed where the field is), the DOM has it too."""
    from PIL import ImageChops

    started = call(session, "start", {})
    assert started["title"] == "kube-sessions browser example" and started["url"].startswith(
        "http://127.0.0.1:"
    )
    before = _pixels(call(session, "screenshot", {})["png"])
    typed = call(session, "type", {"selector": "#name", "text": "Ada Lovelace"})
    assert typed["value"] == "Ada Lovelace"  # the DOM's value, read by the browser
    after = _pixels(call(session, "screenshot", {})["png"])
    # The change is where the field is (top third, left), and covers the glyphs of 12 letters.
    diff = ImageChops.difference(before, after)
    box = diff.getbbox()
    assert box is not None, "the screenshot did not change after typing"
    changed = int((np.asarray(diff).max(axis=2) > 64).sum())
    assert box[1] < after.height / 2 and changed > 300, (box, changed)
    clicked = call(session, "click", {"selector": "#greet"})
    assert "Hello, Ada Lovelace!" in clicked["text"]


def suspended_chat_flow(sdk: Inference, kube: Cluster, namespace: str) -> None:
    """Three turns, a suspend by hand (the annotation), the worker pod gone; the SDK's next call
    wakes the session and the fourth turn knows the first. The App: the chat, suspend enabled."""
    with sdk.session("chat", input={"text": "Hello"}) as session:
        call(session, "init", {"system": "You are terse."})
        for text in ("Hi, my name is Ada and I like tea.", "How is the weather today?", "Do you like tea?"):
            call(session, "message", {"text": text})
        name = session.session_id
        asked = kube.run_kubectl(
            "annotate", "sess", name, "-n", namespace, f"{SUSPEND_REQUESTED}={rfc3339()}"
        )
        assert asked.returncode == 0, asked.stderr
        suspended = await_session(kube, namespace, name, phase_is("Suspended"), 60, "the chat to suspend")
        assert suspended["status"]["suspension"]["bytes"] > 0
        await_condition(
            lambda: (
                not kube.core.list_namespaced_pod(namespace, label_selector=f"{SESSION_LABEL}={name}").items
            ),
            60,
            "its worker pod to go",
        )
        fourth = call(session, "message", {"text": "What is my name?"})  # wakes it
        assert (fourth["turn"], fourth["reply"]) == (4, CHAT_THIRDS["Ada"])
        turns = call(session, "history", {})["turns"]
        assert [t["role"] for t in turns] == ["system"] + ["user", "assistant"] * 4
