"""What a real app needs from the App, on the process node: volumes (an emptyDir and a
ConfigMap's files), a setup timeout, and a Session that says how its worker died."""

from __future__ import annotations

import json
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from ..conftest import Cluster, OperatorProcess, await_session, phase_is
from .test_operator import WORKER_IMAGE, create_session, token_of

pytestmark = pytest.mark.cluster
GROUP = ("kubesessions.io", "v1alpha1")

# An app of the user's own, from a local directory (PYTHONPATH): its paths come from its env,
# so it runs unchanged on the kubelet node, where the mounts are real.
APP_MODULE = textwrap.dedent(
    """
    import os, pathlib, signal, sys, tempfile, time

    class Stateful:
        def setup(self, config):
            time.sleep(float(config.get("setup_seconds", 0)))
            self.greeting = pathlib.Path(os.environ["SETTINGS"]).read_text()
            self.work = pathlib.Path(os.environ["WORK"])

        def run(self, input):
            if input.get("crash"):
                print("loading the big table", file=sys.stderr, flush=True)
                print("giving up: the table does not fit", file=sys.stderr, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            with (self.work / "seen").open("a") as seen:
                seen.write(str(input["n"]))
            return {
                "greeting": self.greeting,
                "seen": (self.work / "seen").read_text(),
                "scratch": tempfile.gettempdir(),
            }
    """
)


@pytest.fixture
def real_app(kube: Cluster, namespace: str, tmp_path: Path) -> str:
    (tmp_path / "stateful_app.py").write_text(APP_MODULE)
    kube.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hello from a ConfigMap"}}
    )
    app = {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "App",
        "metadata": {"name": "stateful"},
        "spec": {
            "image": WORKER_IMAGE,
            "entrypoint": "stateful_app:Stateful",
            "env": [
                {"name": "PYTHONPATH", "value": str(tmp_path)},
                {"name": "WORK", "value": "/work"},
                {"name": "SETTINGS", "value": "/etc/app/greeting"},
            ],
            "volumes": [
                {"name": "work", "emptyDir": {"sizeLimit": "64Mi"}},
                {"name": "settings", "configMap": {"name": "settings"}},
            ],
            "volumeMounts": [
                {"name": "work", "mountPath": "/work"},
                {"name": "settings", "mountPath": "/etc/app", "readOnly": True},
            ],
            "scratchSize": "256Mi",
            "setupTimeout": 120,
            "sessionOverrides": ["setupTimeout"],
        },
    }
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", app)
    return "stateful"


def call(status: dict[str, Any], token: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{status['podIP']}:8080/run", data=json.dumps({"input": payload}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as resp:
        out: dict[str, Any] = json.loads(resp.read())["output"]
        return out


def test_an_apps_emptydir_and_configmap_volumes_serve_its_sessions(
    kube: Cluster, namespace: str, operator: OperatorProcess, real_app: str
) -> None:
    create_session(kube, namespace, "vols", app=real_app, sessionTimeout=120)
    status = await_session(kube, namespace, "vols", phase_is("Ready"), 30, "Ready")["status"]
    token = token_of(kube, namespace, "vols")
    first, second = (call(status, token, {"n": n}) for n in (1, 2))
    assert first["greeting"] == second["greeting"] == "hello from a ConfigMap"
    assert (first["seen"], second["seen"]) == ("1", "12")  # the emptyDir keeps what the session wrote
    pod = kube.core.read_namespaced_pod("vols", namespace)
    scratch = Path(second["scratch"])
    assert scratch.name == "scratch" and pod.metadata.uid in str(scratch.resolve())
    # Another session of the App gets volumes of its own.
    create_session(kube, namespace, "vols2", app=real_app, sessionTimeout=120)
    other = await_session(kube, namespace, "vols2", phase_is("Ready"), 30, "Ready")["status"]
    assert call(other, token_of(kube, namespace, "vols2"), {"n": 7})["seen"] == "7"


def test_a_worker_killed_mid_session_says_how_with_its_last_lines(
    kube: Cluster, namespace: str, operator: OperatorProcess, real_app: str
) -> None:
    create_session(kube, namespace, "dies", app=real_app, sessionTimeout=120)
    status = await_session(kube, namespace, "dies", phase_is("Ready"), 30, "Ready")["status"]
    with pytest.raises(OSError, match=r"Remote end closed|reset|refused"):  # it dies with the worker
        call(status, token_of(kube, namespace, "dies"), {"crash": True})
    failed = await_session(kube, namespace, "dies", phase_is("Failed"), 15, "Failed")["status"]
    assert failed["reason"] == "WorkerLost"
    assert failed["message"].startswith("the worker exited with code 137 (killed by signal 9, SIGKILL)")
    assert failed["message"].endswith("loading the big table\ngiving up: the table does not fit")


def test_a_setup_longer_than_the_setup_timeout_fails_naming_setup(
    kube: Cluster, namespace: str, operator: OperatorProcess, real_app: str
) -> None:
    # 8 s: time for the worker to start on a loaded machine, far less than its setup's 60 s.
    create_session(
        kube, namespace, "slow", app=real_app, config={"setup_seconds": 60}, template={"setupTimeout": 8}
    )
    failed = await_session(kube, namespace, "slow", phase_is("Failed"), 40, "Failed")["status"]
    assert failed["reason"] == "SetupTimeout"
    assert "not ready 8s after it started" in failed["message"] and "setupTimeout" in failed["message"]
