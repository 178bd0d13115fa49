"""The example apps (examples/data, model, chat, browser) in their own images, built here from
their Dockerfiles FROM the worker image, on the kubelet node in the restricted namespace: each
app's reference flow through the gateway with the public inference.sh SDK (tests/realapps.py,
shared with the process node's tests/cluster/test_real_apps.py), then how its end reads on the
Session when it dies: kill -9 of the worker's container, of the browser, and out of memory."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from inferencesh import Inference, inference

from kubesessions.localcluster import containerd, images, kubeletnode
from kubesessions.localcluster.nodeconfig import EXAMPLE_IMAGES

from ..cluster.conftest import service_account_token
from ..conftest import REPO, Cluster, await_session, phase_is
from ..realapps import (
    DATA_ENV,
    browser_flow,
    chat_flow,
    data_flow,
    importable_examples,
    model_flow,
    suspended_chat_flow,
)
from .conftest import Release, record_images, stage, worker_pid

pytestmark = pytest.mark.e2e
from localapps import example_app  # noqa: E402 (on the path through ..realapps)

# The node has the machine's two cores and the chart's pods: one app's worker at a time, each
# with enough CPU that Python and Chromium start in seconds (the request is also the limit).
RESOURCES = {
    "data": {"cpu": "1", "memory": "2Gi"},
    "model": {"cpu": "500m", "memory": "512Mi"},
    "chat": {"cpu": "250m", "memory": "256Mi"},
    "browser": {"cpu": "1", "memory": "2Gi"},
}
WEIGHTS_IN_IMAGE = "opt/model/digits-forest.joblib"  # the model Dockerfile's MODEL_PATH


@pytest.fixture(scope="module")
def example_images(kube: Cluster) -> dict[str, Path]:
    """The four images (built by `make images`, else here), imported into the node's containerd."""
    started = time.monotonic()
    archives = images.build_examples(REPO)
    assert kube.state_dir is not None
    for archive in archives.values():  # content already there is not copied again
        containerd.import_archive(kubeletnode.paths(kube.state_dir.root), archive)
    record_images(archives)
    stage("example images imported", started)
    return archives


@pytest.fixture(scope="module")
def sdk(release: Release, example_images: dict[str, Path]) -> Inference:
    token = service_account_token(release.kube, release.namespace, "real-apps", allowed=True)
    return inference(api_key=token, base_url=release.url)


@pytest.fixture
def examples_path() -> Iterator[None]:
    with importable_examples():
        yield


def apply_app(release: Release, folder: str, name: str | None = None, **spec: Any) -> None:
    spec.setdefault("resources", RESOURCES[folder])
    release.kubectl("apply", "-f", "-", stdin=json.dumps(example_app(folder, name, **spec)))


def failed(release: Release, name: str, timeout: float = 60) -> dict[str, Any]:
    obj = await_session(release.kube, release.namespace, name, phase_is("Failed"), timeout, "Failed")
    status: dict[str, Any] = obj["status"]
    return status


def kill_9_of_its_container_says_so(release: Release, session_id: str) -> None:
    """kill -9 of the worker's container (its process on the host): the Session fails as
    WorkerLost, its message naming the signal."""
    os.kill(worker_pid(release, session_id), signal.SIGKILL)
    status = failed(release, session_id)
    assert status["reason"] == "WorkerLost", status
    assert status["message"].startswith("the worker exited with code 137 (killed by signal 9, SIGKILL)"), (
        status
    )


def test_data_analyses_match_then_kill_9_of_its_container_says_so(
    sdk: Inference, release: Release, examples_path: None, tmp_path: Path
) -> None:
    apply_app(release, "data", env=DATA_ENV)
    session = sdk.session("data", input={})
    data_flow(session, tmp_path)
    kill_9_of_its_container_says_so(release, session.session_id)


def weights_from(archive: Path, member: str) -> bytes:
    """A file of a docker-archive image: from its topmost layer that has it."""
    with tarfile.open(archive) as image:
        manifest = json.loads(image.extractfile("manifest.json").read())  # type: ignore[union-attr]
        for layer in reversed(manifest[0]["Layers"]):
            with tarfile.open(fileobj=image.extractfile(layer)) as files:  # type: ignore[arg-type]
                if member in files.getnames():
                    return files.extractfile(member).read()  # type: ignore[union-attr]
    raise AssertionError(f"{member} is in no layer of {archive}")


def test_model_predictions_match_its_weights_run_here_then_kill_9_of_its_container_says_so(
    sdk: Inference, release: Release, example_images: dict[str, Path], examples_path: None, tmp_path: Path
) -> None:
    """The weights the image was built with (its MODEL_PATH), loaded here from the image's own
    layers, predict what the worker predicts."""
    apply_app(release, "model")
    weights = tmp_path / "weights.joblib"
    weights.write_bytes(weights_from(example_images[_ref("model")], WEIGHTS_IN_IMAGE))
    kill_9_of_its_container_says_so(release, model_flow(sdk, weights, {}))


# A memory limit each app's worker exceeds while it starts: the worker's Python and the app's
# libraries (DuckDB; scikit-learn and the forest; Chromium and Playwright's driver) do not fit.
TOO_LITTLE = {"data": "48Mi", "model": "64Mi", "chat": "24Mi", "browser": "128Mi"}


@pytest.mark.parametrize("folder", list(TOO_LITTLE))
def test_an_app_over_its_memory_limit_fails_as_out_of_memory_naming_the_limit(
    release: Release, example_images: dict[str, Path], folder: str
) -> None:
    """The kernel kills the worker (or, in the browser's, whichever of its processes is largest):
    the Session says OutOfMemory with the limit to raise, whatever the exit looked like."""
    limit = TOO_LITTLE[folder]
    name = f"oom-{folder}-{uuid.uuid4().hex[:4]}"
    apply_app(release, folder, name=name, resources={"cpu": RESOURCES[folder]["cpu"], "memory": limit})
    session = {"apiVersion": "kubesessions.io/v1alpha1", "kind": "Session", "metadata": {"name": name}}
    release.kubectl(
        "apply", "-f", "-", stdin=json.dumps({**session, "spec": {"app": name, "sessionTimeout": 120}})
    )
    status = failed(release, name, timeout=120)
    assert status["reason"] == "OutOfMemory", status
    assert f"more than its memory limit of {limit}" in status["message"], status
    assert "raise resources.memory" in status["message"]


def test_the_chats_third_answer_depends_on_the_first_turn_then_kill_9_of_its_container_says_so(
    sdk: Inference, release: Release
) -> None:
    apply_app(release, "chat")
    kill_9_of_its_container_says_so(release, chat_flow(sdk))


def test_a_suspended_chat_wakes_on_the_sdks_next_call_and_knows_its_turns(
    sdk: Inference, release: Release
) -> None:
    """Suspend and resume in containers: the state goes to the local cluster's store at the
    bridge address through the workers' egress allow-list, and back into a new pod."""
    apply_app(release, "chat", suspend={"enabled": True, "keepSeconds": 600})
    suspended_chat_flow(sdk, release.kube, release.namespace)


def test_the_browser_shows_the_typed_text_then_its_death_ends_the_session(
    sdk: Inference, release: Release, examples_path: None
) -> None:
    """kill -9 of Chromium (not of the worker): the app sees it go and exits, with a line that
    says so in the Session's message."""
    import browser_app

    apply_app(release, "browser")
    session = sdk.session("browser", input={})
    browser_flow(session)
    browser = browser_app.browser_pid(worker_pid(release, session.session_id))
    assert browser is not None, "no Chromium under the worker's process"
    started = time.monotonic()
    os.kill(browser, signal.SIGKILL)
    status = failed(release, session.session_id, timeout=30)
    took = time.monotonic() - started
    assert status["reason"] == "WorkerLost", status
    assert status["message"].startswith(f"the worker exited with code {browser_app.BROWSER_LOST}"), status
    assert "the browser (chromium, pid" in status["message"] and "died mid-session" in status["message"]
    print(f"[e2e] kill -9 of chromium -> Failed/WorkerLost: {took:.1f}s")


def _ref(folder: str) -> str:
    return f"{EXAMPLE_IMAGES[folder]}:{images.TAG}"
