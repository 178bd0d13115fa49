"""The real example apps (examples/data, model, chat, browser) on the process node, through the
gateway with the public inference.sh SDK: each app's reference flow (tests/realapps.py, shared
with the kubelet node's tests/e2e/test_real_apps.py), checked against the same work done in the
test process. The Apps are the folders' app.yaml with ``PYTHONPATH`` pointed at the folder: the
README's way of bringing your own app to the process node."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inferencesh import Inference, inference
from kubernetes import client

from kubesessions.control.decide import pool

from ..conftest import Cluster, await_condition
from ..realapps import (
    DATA_ENV,
    browser_flow,
    call,
    chat_flow,
    data_flow,
    importable_examples,
    model_flow,
    suspended_chat_flow,
)
from .conftest import GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster
from localapps import local_app  # noqa: E402 (on the path through ..realapps)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "no chromium here (make chromium-deps installs it: needs root and apt)"


def create(kube: Cluster, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", body)


@pytest.fixture
def sdk(gateway: GatewayProcess, kube: Cluster, namespace: str) -> Inference:
    return inference(
        api_key=service_account_token(kube, namespace, "sdk", allowed=True), base_url=gateway.url
    )


@pytest.fixture
def examples_path() -> Iterator[None]:
    with importable_examples():
        yield


def test_data_analyses_match_the_same_queries_run_here(
    sdk: Inference, kube: Cluster, namespace: str, examples_path: None, tmp_path: Path
) -> None:
    create(kube, namespace, local_app("data", env=DATA_ENV))
    with sdk.session("data", input={}) as session:
        data_flow(session, tmp_path)


def test_model_predictions_match_the_same_model_run_here(
    sdk: Inference, kube: Cluster, namespace: str, examples_path: None, tmp_path: Path
) -> None:
    """The worker loads a weights file made here (the user's own weights, named by config), and
    predicts what the same file predicts in this process."""
    import model_app

    create(kube, namespace, local_app("model"))
    weights = model_app.train(tmp_path / "weights.joblib")
    session_id = model_flow(sdk, weights, {"weights": str(weights), "trainIfMissing": False})
    sdk.sessions.end(session_id)


def test_the_chats_third_answer_depends_on_the_first_turn(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    create(kube, namespace, local_app("chat"))
    sdk.sessions.end(chat_flow(sdk))


def test_a_suspended_chat_wakes_on_the_sdks_next_call_and_knows_its_turns(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    create(kube, namespace, local_app("chat", suspend={"enabled": True, "keepSeconds": 600}))
    suspended_chat_flow(sdk, kube, namespace)


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_browser_screenshot_after_type_shows_the_typed_text(
    sdk: Inference, kube: Cluster, namespace: str
) -> None:
    create(kube, namespace, local_app("browser"))
    with sdk.session("browser", input={}) as session:
        browser_flow(session)
        assert call(session, "close", {}) == {"closed": True}


# Each app's pool, and a first call its session can answer (its output says setupRuns/setupAt).
POOLED = {
    "data": ("data", "run", {}),
    "model": ("classifier", "predict", {"images": [[0.0] * 64]}),
    "chat": ("chat", "message", {"text": "Hello."}),
    "browser": ("browser", "start", {}),
}


@pytest.mark.parametrize("folder", list(POOLED))
def test_a_warm_pool_serves_a_new_session_without_running_setup_again(
    sdk: Inference, kube: Cluster, namespace: str, folder: str
) -> None:
    """setupRuns and setupAt come from the worker's memory: 1, and before the session was asked
    for, on a worker the operator says came from the pool."""
    if folder == "browser" and CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    app, function, input = POOLED[folder]
    env = DATA_ENV if folder == "data" else None
    create(kube, namespace, local_app(folder, env=env, warmPool={"size": 1}))

    def pool_ready() -> bool:
        got = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(*GROUP, namespace, "apps", app)
        return bool(((got.get("status") or {}).get("warmPool") or {}).get("ready") == 1)

    await_condition(pool_ready, 180, f"the {app} app's warm pool to be ready")
    assert pool_pods_of(kube, namespace, app)
    asked = time.time()
    result: Any = sdk.run({"app": app, "function": function, "input": input, "session": "new"})
    out = result["output"]
    assert out["setupRuns"] == 1 and out["setupAt"] < asked, out
    session = client.CustomObjectsApi(kube.api).get_namespaced_custom_object(
        *GROUP, namespace, "sessions", result["session_id"]
    )
    assert session["status"]["startedFrom"] == "pool"
    again: Any = sdk.run({"app": app, "function": function, "input": input, "session": result["session_id"]})
    assert again["output"]["setupRuns"] == 1
    sdk.sessions.end(result["session_id"])


def pool_pods_of(kube: Cluster, namespace: str, app: str) -> list[Any]:
    items = kube.core.list_namespaced_pod(namespace, label_selector=pool.selector(app)).items
    return [p for p in items if not p.metadata.deletion_timestamp]
