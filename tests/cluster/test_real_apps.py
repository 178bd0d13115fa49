"""The real example apps (examples/data, model, chat, browser) on the process node, through the
gateway with the public inference.sh SDK: each app's reference flow, checked against the same
work done in the test process. The Apps are the folders' app.yaml with ``PYTHONPATH`` pointed at
the folder: the README's way of bringing your own app to the process node."""

from __future__ import annotations

import base64
import io
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from inferencesh import Inference, inference
from kubernetes import client

from kubesessions.api.names import SESSION_LABEL, SUSPEND_REQUESTED
from kubesessions.common.timefmt import rfc3339
from kubesessions.control.decide import pool

from ..conftest import REPO, Cluster, await_condition, await_session, phase_is
from .conftest import GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(EXAMPLES))
from localapps import FOLDERS, local_app  # noqa: E402 (the examples folder is no package)

# Fewer rows than the app's default 3 M: setup stays a couple of seconds on a loaded 2-core
# machine (the bench runs the full size).
DATA_ROWS = 1_000_000
DATA_ENV = {"DATA_ROWS": str(DATA_ROWS)}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def create(kube: Cluster, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", body)


@pytest.fixture
def sdk(gateway: GatewayProcess, kube: Cluster, namespace: str) -> Inference:
    return inference(
        api_key=service_account_token(kube, namespace, "sdk", allowed=True), base_url=gateway.url
    )


@pytest.fixture
def examples_path() -> Iterator[None]:
    """The app modules, importable by the test process too (to do the same work outside)."""
    paths = [str(EXAMPLES / name) for name in FOLDERS]
    sys.path[:0] = paths
    yield
    del sys.path[: len(paths)]


def call(session: Any, function: str, input: dict[str, Any]) -> dict[str, Any]:
    output: dict[str, Any] = session.call(function, input)["output"]
    return output


def test_data_analyses_match_the_same_queries_run_here(
    sdk: Inference, kube: Cluster, namespace: str, examples_path: None, tmp_path: Path
) -> None:
    import data_app

    create(kube, namespace, local_app("data", env=DATA_ENV))
    here = data_app.load(data_app.dataset(DATA_ROWS, 7, str(tmp_path)))
    with sdk.session("data", input={}) as session:
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


def test_model_predictions_match_the_same_model_run_here(
    sdk: Inference, kube: Cluster, namespace: str, examples_path: None, tmp_path: Path
) -> None:
    """The worker loads a weights file made here (the user's own weights, named by config), and
    predicts what the same file predicts in this process."""
    import joblib
    import model_app
    from sklearn.datasets import load_digits

    create(kube, namespace, local_app("model"))
    weights = model_app.train(tmp_path / "weights.joblib")
    images = load_digits().data[::37]  # 49 images
    here = joblib.load(weights)
    result: Any = sdk.run(
        {
            "app": "classifier",
            "input": {"images": images.tolist()},
            "setup": {"weights": str(weights), "trainIfMissing": False},
            "session": "new",
        }
    )
    out = result["output"]
    assert out["labels"] == here.predict(images).tolist()
    np.testing.assert_allclose(out["probabilities"], here.predict_proba(images), atol=1e-6)
    for _ in range(3):  # loaded once, predicted many times
        again: Any = sdk.run(
            {"app": "classifier", "input": {"images": images[:3].tolist()}, "session": result["session_id"]}
        )
        assert again["output"]["labels"] == out["labels"][:3] and again["output"]["setupRuns"] == 1
    sdk.sessions.end(result["session_id"])


def test_the_chats_third_answer_depends_on_the_first_turn(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    create(kube, namespace, local_app("chat"))
    thirds = {}
    for name in ("Ada", "Grace"):
        with sdk.session("chat", input={"text": f"Hello, my name is {name}."}) as session:
            assert call(session, "init", {"system": "You are terse."})["turn"] == 0  # starts over
            first = call(session, "message", {"text": f"Hi, my name is {name} and I like tea."})
            second = call(session, "message", {"text": "How is the weather today?"})
            third = call(session, "message", {"text": "What is my name?"})
            assert (first["turn"], second["turn"], third["turn"]) == (1, 2, 3)
            thirds[name] = third["reply"]
            turns = call(session, "history", {})["turns"]
            assert [t["role"] for t in turns] == ["system"] + ["user", "assistant"] * 3
    assert thirds == {
        "Ada": "Your name is Ada (you told me in turn 1).",
        "Grace": "Your name is Grace (you told me in turn 1).",
    }


def test_a_suspended_chat_wakes_on_the_sdks_next_call_and_knows_its_turns(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    create(kube, namespace, local_app("chat", suspend={"enabled": True, "keepSeconds": 600}))
    with sdk.session("chat", input={"text": "Hello"}) as session:
        call(session, "init", {"system": "You are terse."})
        for text in ("Hi, my name is Ada and I like tea.", "How is the weather today?", "Do you like tea?"):
            call(session, "message", {"text": text})
        name = session.session_id
        asked = kube.run_kubectl(
            "annotate", "sess", name, "-n", namespace, f"{SUSPEND_REQUESTED}={rfc3339()}"
        )
        assert asked.returncode == 0, asked.stderr
        suspended = await_session(kube, namespace, name, phase_is("Suspended"), 30, "the chat to suspend")
        assert suspended["status"]["suspension"]["bytes"] > 0
        await_condition(
            lambda: (
                not kube.core.list_namespaced_pod(namespace, label_selector=f"{SESSION_LABEL}={name}").items
            ),
            30,
            "its worker pod to go",
        )
        fourth = call(session, "message", {"text": "What is my name?"})  # wakes it
        assert (fourth["turn"], fourth["reply"]) == (4, "Your name is Ada (you told me in turn 1).")
        turns = call(session, "history", {})["turns"]
        assert [t["role"] for t in turns] == ["system"] + ["user", "assistant"] * 4


def _pixels(png_b64: str) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(png_b64))).convert("RGB")


@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium here (make prereqs installs it: needs root and apt)"
)
def test_the_browser_screenshot_after_type_shows_the_typed_text(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    from PIL import ImageChops

    create(kube, namespace, local_app("browser"))
    with sdk.session("browser", input={}) as session:
        started = call(session, "start", {})
        assert started["title"] == "kube-sessions browser example" and started["url"].startswith(
            "http://127.0.0.1:"
        )
        before = _pixels(call(session, "screenshot", {})["png"])
        typed = call(session, "type", {"selector": "#name", "text": "Ada Lovelace"})
        assert typed["value"] == "Ada Lovelace"  # the DOM's value, read by the browser
        after = _pixels(call(session, "screenshot", {})["png"])
        # The change is where the field is (top third, left), and covers the glyphs of 12 letters.
        box = ImageChops.difference(before, after).getbbox()
        assert box is not None, "the screenshot did not change after typing"
        changed = sum(1 for p in ImageChops.difference(before, after).getdata() if max(p) > 64)
        assert box[1] < after.height / 2 and changed > 300, (box, changed)
        clicked = call(session, "click", {"selector": "#greet"})
        assert "Hello, Ada Lovelace!" in clicked["text"]
        assert call(session, "close", {}) == {"closed": True}


def test_a_warm_pool_serves_a_new_session_without_running_setup_again(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    """setupRuns and setupAt come from the worker's memory: 1, and before the session was asked
    for, on a worker the operator says came from the pool."""
    create(kube, namespace, local_app("data", env=DATA_ENV, warmPool={"size": 1}))

    def pool_ready() -> bool:
        app = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
            *GROUP, namespace, "apps", "data"
        )
        return bool(((app.get("status") or {}).get("warmPool") or {}).get("ready") == 1)

    await_condition(pool_ready, 120, "the data app's warm pool to be ready")
    assert pool_pods_of(kube, namespace, "data")
    asked = time.time()
    result: Any = sdk.run({"app": "data", "input": {}, "session": "new"})
    out = result["output"]
    assert out["setupRuns"] == 1 and out["setupAt"] < asked, out
    session = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        *GROUP, namespace, "sessions", result["session_id"]
    )
    assert session["status"]["startedFrom"] == "pool"
    again: Any = sdk.run({"app": "data", "function": "trends", "input": {}, "session": result["session_id"]})
    assert again["output"]["setupRuns"] == 1
    sdk.sessions.end(result["session_id"])


def pool_pods_of(kube: Cluster, namespace: str, app: str) -> list[Any]:
    items = kube.core.list_namespaced_pod(namespace, label_selector=pool.selector(app)).items
    return [p for p in items if not p.metadata.deletion_timestamp]
