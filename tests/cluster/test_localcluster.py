"""The local cluster is a real control plane, and its process node behaves like a node."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubesessions.localcluster import objectstore, processes
from kubesessions.localcluster.processes import start_ticks

from ..conftest import Cluster, await_condition, await_pod

pytestmark = pytest.mark.cluster


def kubectl(kube: Cluster, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def web_pod(name: str, port: int = 8000, **container: Any) -> dict[str, Any]:
    """A pod serving HTTP with python3 -m http.server on its own podIP."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.11",
                    "command": ["python3", "-m", "http.server", str(port), "--bind", "$(POD_IP)"],
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": port}, "periodSeconds": 1},
                    **container,
                }
            ],
        },
    }


def script_pod(name: str, script: str, restart: str = "Never", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "containers": [
                {"name": "main", "image": "python:3.11", "command": ["python3", "-c", script], **container}
            ],
        },
    }


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def terminal(pod: Any) -> bool:
    return pod.status.phase in ("Succeeded", "Failed")


def pid_of(pod: Any) -> int:
    container_id = pod.status.container_statuses[0].container_id
    assert container_id.startswith("process://"), container_id
    return int(container_id.removeprefix("process://"))


def test_kubectl_apply_get_delete(kube: Cluster, namespace: str) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}}
    out = kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    assert "configmap/cm created" in out
    got = json.loads(kubectl(kube, "get", "configmap", "cm", "-n", namespace, "-o", "json"))
    assert got["data"] == {"k": "v"}
    kubectl(kube, "delete", "configmap", "cm", "-n", namespace)
    with pytest.raises(ApiException) as err:
        kube.core.read_namespaced_config_map("cm", namespace)
    assert err.value.status == 404


def test_node_is_ready_and_advertises_gpus(kube: Cluster) -> None:
    node = json.loads(kubectl(kube, "get", "node", "local-0", "-o", "json"))
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"]
    assert "not a kubelet" in node["metadata"]["annotations"]["kubesessions.io/process-node"]
    version = json.loads(kubectl(kube, "version", "-o", "json"))["serverVersion"]["gitVersion"]
    assert version.startswith("v1.36.")


def test_http_server_pod_runs_on_its_own_ip_and_stops_on_delete(kube: Cluster, namespace: str) -> None:
    core = kube.core
    core.create_namespaced_pod(namespace, web_pod("web-a"))
    core.create_namespaced_pod(namespace, web_pod("web-b"))  # same port, other podIP
    pods = [await_pod(kube, namespace, n, ready, 30, "Ready") for n in ("web-a", "web-b")]
    ips = [p.status.pod_ip for p in pods]
    assert len(set(ips)) == 2
    assert all(ip.startswith("127.") and ip != "127.0.0.1" for ip in ips)
    for pod in pods:
        assert pod.status.phase == "Running"
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8000/", timeout=5) as resp:
            assert resp.status == 200
    pid = pid_of(pods[0])
    ticks = start_ticks(pid)
    assert ticks is not None, "the container process should be running"
    core.delete_namespaced_pod("web-a", namespace)
    await_condition(
        lambda: not processes.alive(processes.ProcessRecord("web", pid, ticks)),
        timeout=15,
        what=f"process {pid} of the deleted pod to exit",
    )
    await_condition(
        lambda: "web-a" not in {p.metadata.name for p in core.list_namespaced_pod(namespace).items},
        timeout=15,
        what="the pod object to be removed",
    )


def test_pod_asking_for_too_many_gpus_stays_pending(kube: Cluster, namespace: str) -> None:
    kube.core.create_namespaced_pod(
        namespace, web_pod("greedy", resources={"limits": {"nvidia.com/gpu": "3"}})
    )

    def unschedulable(pod: Any) -> bool:
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in pod.status.conditions or []
        )

    pod = await_pod(kube, namespace, "greedy", unschedulable, 30, "Unschedulable")
    assert pod.status.phase == "Pending"
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "nvidia.com/gpu" in message


def test_gpu_pod_within_capacity_is_scheduled(kube: Cluster, namespace: str) -> None:
    kube.core.create_namespaced_pod(namespace, web_pod("gpu", resources={"limits": {"nvidia.com/gpu": "1"}}))
    pod = await_pod(kube, namespace, "gpu", ready, 30, "Ready")
    assert pod.spec.node_name == "local-0"


def test_garbage_collector_deletes_dependents(kube: Cluster, namespace: str) -> None:
    core = kube.core
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    core.delete_namespaced_config_map("owner", namespace)
    await_condition(
        lambda: "child" not in {c.metadata.name for c in core.list_namespaced_config_map(namespace).items},
        timeout=30,
        what="the garbage collector to delete the dependent",
    )


def test_env_from_literals_secrets_configmaps_and_downward_api(kube: Cluster, namespace: str) -> None:
    core = kube.core
    core.create_namespaced_secret(namespace, {"metadata": {"name": "s"}, "stringData": {"token": "t0k"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"A": "1", "B": "2"}})
    script = (
        "import os, json; keys = ['LIT', 'TOKEN', 'CFG_A', 'CFG_B', 'NAME', 'NS', 'IP', 'REF']; "
        "open(os.environ['KUBESESSIONS_TERMINATION_MESSAGE_PATH'], 'w')"
        ".write(json.dumps({k: os.environ.get(k) for k in keys}))"
    )
    env = [
        {"name": "LIT", "value": "plain"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "REF", "value": "$(LIT)-$(NAME)"},
    ]
    pod = script_pod("env", script, env=env, envFrom=[{"prefix": "CFG_", "configMapRef": {"name": "c"}}])
    core.create_namespaced_pod(namespace, pod)
    done = await_pod(kube, namespace, "env", terminal, 30, "the pod to finish")
    assert done.status.phase == "Succeeded"
    seen = json.loads(done.status.container_statuses[0].state.terminated.message)
    assert seen == {
        "LIT": "plain",
        "TOKEN": "t0k",
        "CFG_A": "1",
        "CFG_B": "2",
        "NAME": "env",
        "NS": namespace,
        "IP": done.status.pod_ip,
        "REF": "plain-env",
    }


def test_missing_secret_is_a_config_error_until_it_exists(kube: Cluster, namespace: str) -> None:
    core = kube.core
    env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    core.create_namespaced_pod(namespace, script_pod("wait", "pass", env=env))

    def config_error(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses) and (statuses[0].state.waiting or client.V1ContainerStateWaiting()).reason == (
            "CreateContainerConfigError"
        )

    pod = await_pod(kube, namespace, "wait", config_error, 30, "CreateContainerConfigError")
    assert "later" in pod.status.container_statuses[0].state.waiting.message
    core.create_namespaced_secret(namespace, {"metadata": {"name": "later"}, "stringData": {"k": "v"}})
    done = await_pod(kube, namespace, "wait", terminal, 30, "the pod to run once the secret exists")
    assert done.status.phase == "Succeeded"


def test_exit_code_and_termination_message_fail_the_pod(kube: Cluster, namespace: str) -> None:
    script = (
        "import os, sys; open(os.environ['KUBESESSIONS_TERMINATION_MESSAGE_PATH'], 'w')"
        ".write('setup failed: no model'); sys.exit(3)"
    )
    kube.core.create_namespaced_pod(namespace, script_pod("fail", script))
    pod = await_pod(kube, namespace, "fail", terminal, 30, "the pod to fail")
    assert pod.status.phase == "Failed"
    term = pod.status.container_statuses[0].state.terminated
    assert (term.exit_code, term.reason, term.message) == (3, "Error", "setup failed: no model")


def test_on_failure_restarts_until_success(kube: Cluster, namespace: str) -> None:
    # Fails on its first run, succeeds on the second: the marker file lives in the pod's TMPDIR.
    script = (
        "import os, sys, pathlib; m = pathlib.Path(os.environ['TMPDIR'], 'ran'); "
        "sys.exit(0) if m.exists() else (m.touch(), sys.exit(1))"
    )
    kube.core.create_namespaced_pod(namespace, script_pod("retry", script, restart="OnFailure"))
    pod = await_pod(kube, namespace, "retry", terminal, 30, "the pod to succeed after a restart")
    status = pod.status.container_statuses[0]
    assert pod.status.phase == "Succeeded"
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 1


def test_failing_liveness_probe_restarts_the_container(kube: Cluster, namespace: str) -> None:
    pod = web_pod("live")
    container = pod["spec"]["containers"][0]
    pod["spec"]["restartPolicy"] = "Always"
    container["livenessProbe"] = {
        "httpGet": {"path": "/", "port": 9999},  # nothing listens there
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    kube.core.create_namespaced_pod(namespace, pod)
    restarted = await_pod(
        kube,
        namespace,
        "live",
        lambda p: bool(p.status.container_statuses) and p.status.container_statuses[0].restart_count >= 1,
        30,
        "a restart after the liveness probe failed",
    )
    assert restarted.status.phase == "Running"


def test_unrunnable_image_fails_the_pod_with_a_clear_reason(kube: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "noimg"},
        "spec": {"containers": [{"name": "c", "image": "registry.example/unknown:1"}]},
    }
    kube.core.create_namespaced_pod(namespace, pod)
    failed = await_pod(kube, namespace, "noimg", terminal, 30, "the pod to fail")
    assert failed.status.phase == "Failed"
    assert failed.status.reason == "ErrImagePull"
    assert "registry.example/unknown:1" in failed.status.message
    waiting = failed.status.container_statuses[0].state.waiting
    assert waiting.reason == "ErrImagePull"


def test_missing_command_is_a_start_error(kube: Cluster, namespace: str) -> None:
    pod = script_pod("nocmd", "")
    pod["spec"]["containers"][0]["command"] = ["/no/such/binary"]
    kube.core.create_namespaced_pod(namespace, pod)
    failed = await_pod(kube, namespace, "nocmd", terminal, 30, "the pod to fail")
    term = failed.status.container_statuses[0].state.terminated
    assert (failed.status.phase, term.reason, term.exit_code) == ("Failed", "StartError", 128)
    assert "/no/such/binary" in term.message


def test_up_refuses_a_second_start_and_down_leaves_no_process(tmp_path: Path) -> None:
    from kubesessions.localcluster import cluster
    from kubesessions.localcluster.nodeconfig import NodeConfig

    state_dir = cluster.StateDir(tmp_path / "second")
    try:
        up = subprocess.run(
            [
                str(Path(sys.executable).parent / "kubesessions"),
                "localcluster",
                "up",
                "--state-dir",
                str(state_dir.root),
                "--gpus",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stderr
        state = state_dir.load()
        assert state is not None
        # What to paste next, PATH for the matching kubectl included, and the state store's
        # settings for an operator run by hand.
        lines = cluster.env_lines(state_dir)
        assert up.stdout.splitlines()[-len(lines) :] == lines
        assert up.stdout.splitlines()[-1].startswith("export PATH=")
        assert any(
            line.startswith("export KUBESESSIONS_STATE_STORE_ENDPOINT=http://127.0.0.1:") for line in lines
        )
        names = {p.name for p in state.processes}
        assert names == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "seaweedfs",
            "process-node",
        }
        # The hint names this cluster's state directory, or it would point at another one.
        hint = (
            re.escape(f"already running from {state_dir.root}")
            + ".*"
            + re.escape(f"env --state-dir {state_dir.root}")
        )
        with pytest.raises(cluster.ClusterError, match=hint):
            cluster.up(state_dir, NodeConfig(), log=lambda _: None)
    except BaseException:
        cluster.down(state_dir, log=lambda _: None)
        raise
    # A pod process too, so `down` must also stop what the node started.
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(state_dir.kubeconfig))
    core = client.CoreV1Api(api)
    await_condition(
        lambda: core.list_namespaced_service_account("default").items, 30, "the default ServiceAccount"
    )
    core.create_namespaced_pod("default", web_pod("p"))
    kube = Cluster(state_dir.kubeconfig, Path("kubectl"), state_dir, api)
    pod_pid = pid_of(await_pod(kube, "default", "p", ready, 30, "Ready"))
    api.close()
    records = [*state.processes, processes.ProcessRecord("pod", pod_pid, start_ticks(pod_pid) or -1)]
    assert all(processes.alive(r) for r in records)
    cluster.down(state_dir, log=lambda _: None)
    assert [r for r in records if processes.alive(r)] == []
    assert cluster.status(state_dir)["running"] is False
    assert objectstore.leftovers(state_dir.root, state.ports) == []  # no sockets left in /tmp


def test_kubectl_logs_reach_the_process_node_by_its_ip(kube: Cluster, namespace: str) -> None:
    """The API server calls the node's log endpoint at its InternalIP over TLS (no DNS lookup of
    `local-0`), and the worker's JSON log lines come back; --tail and -f work too."""
    from .test_worker_pod import TOKEN, worker_pod

    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "w-token"}, "stringData": {"token": TOKEN}}
    )
    kube.core.create_namespaced_pod(namespace, worker_pod("w", "w-token"))
    await_pod(kube, namespace, "w", ready, 60, "the worker to be Ready")
    lines = [json.loads(line) for line in kubectl(kube, "-n", namespace, "logs", "w").splitlines()]
    assert any("listening on" in line.get("message", "") for line in lines), lines
    assert len(kubectl(kube, "-n", namespace, "logs", "w", "--tail=1").splitlines()) == 1

    kube.core.create_namespaced_pod(
        namespace,
        script_pod(
            "talker", "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.5)"
        ),
    )
    await_pod(kube, namespace, "talker", lambda p: p.status.phase != "Pending", 30, "talker to start")
    # -f returns once the container has ended, with everything it printed.
    assert kubectl(kube, "-n", namespace, "logs", "-f", "talker").split() == ["0", "1", "2"]

    refused = subprocess.run(
        [str(kube.kubectl), f"--kubeconfig={kube.kubeconfig}", "-n", namespace, "logs", "w", "--timestamps"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "does not support timestamps" in refused.stderr, refused.stderr


def test_emptydir_configmap_and_secret_volumes_are_per_pod_directories(kube: Cluster, namespace: str) -> None:
    core = kube.core
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"a.json": "{}"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "keys"}, "stringData": {"k": "s3cret"}})
    # The app finds its mounts through env values naming paths under them (rewritten by the
    # process node) or KUBESESSIONS_VOLUME_<NAME>.
    script = (
        "import os, json, pathlib; e = os.environ; "
        "pathlib.Path(e['WORK'], 'out').write_text('written'); "
        "open(e['KUBESESSIONS_TERMINATION_MESSAGE_PATH'], 'w').write(json.dumps({"
        "'work': e['KUBESESSIONS_VOLUME_WORK'], 'wrote': pathlib.Path(e['WORK'], 'out').read_text(), "
        "'config': pathlib.Path(e['SETTINGS']).read_text(), "
        "'key': pathlib.Path(e['KUBESESSIONS_VOLUME_KEYS'], 'k').read_text(), "
        "'key_mode': oct(pathlib.Path(e['KUBESESSIONS_VOLUME_KEYS'], 'k').stat().st_mode & 0o777)}))"
    )
    pod = script_pod(
        "vols",
        script,
        env=[{"name": "WORK", "value": "/work"}, {"name": "SETTINGS", "value": "/etc/app/a.json"}],
        volumeMounts=[
            {"name": "work", "mountPath": "/work"},
            {"name": "settings", "mountPath": "/etc/app", "readOnly": True},
            {"name": "keys", "mountPath": "/keys", "readOnly": True},
        ],
    )
    pod["spec"]["volumes"] = [
        {"name": "work", "emptyDir": {"sizeLimit": "10Mi"}},
        {"name": "settings", "configMap": {"name": "settings"}},
        {"name": "keys", "secret": {"secretName": "keys", "defaultMode": 0o400}},
    ]
    core.create_namespaced_pod(namespace, pod)
    done = await_pod(kube, namespace, "vols", terminal, 30, "the pod to finish")
    assert done.status.phase == "Succeeded", done.status
    seen = json.loads(done.status.container_statuses[0].state.terminated.message)
    assert (seen["wrote"], seen["config"], seen["key"], seen["key_mode"]) == (
        "written",
        "{}",
        "s3cret",
        "0o400",
    )
    work = Path(seen["work"])
    # A short link (Unix sockets in TMPDIR need short paths) to the pod's own directory.
    assert work.name == "work" and done.metadata.uid in str(work.resolve())
    core.delete_namespaced_pod("vols", namespace)
    await_condition(lambda: not work.exists(), 30, "the emptyDir to go with the pod")


def test_a_volume_the_process_node_cannot_mount_fails_with_its_reason(kube: Cluster, namespace: str) -> None:
    pod = script_pod("hostpath", "pass", volumeMounts=[{"name": "data", "mountPath": "/data"}])
    # (A claim's pod waits for the scheduler to bind it; a hostPath one reaches the node at once.)
    pod["spec"]["volumes"] = [{"name": "data", "hostPath": {"path": "/srv/data"}}]
    kube.core.create_namespaced_pod(namespace, pod)

    def config_error(pod: Any) -> bool:
        statuses = pod.status.container_statuses or []
        return bool(statuses) and (statuses[0].state.waiting or client.V1ContainerStateWaiting()).reason == (
            "CreateContainerConfigError"
        )

    waiting = await_pod(kube, namespace, "hostpath", config_error, 30, "CreateContainerConfigError")
    message = waiting.status.container_statuses[0].state.waiting.message
    assert 'volume "data": hostPath volumes are not provided by the process node' in message


def test_the_state_store_is_up_its_secret_written_and_pods_reach_it(kube: Cluster, namespace: str) -> None:
    """`up` ran SeaweedFS and wrote the chart's Secret; a URL presigned with those settings
    carries a pod's upload (as a worker's suspend does) and download."""
    from kubesessions.statestore import StoreConfig
    from kubesessions.statestore.store import StateStore

    secret = kube.core.read_namespaced_secret("kube-sessions-state-store", "kube-sessions")
    env = {f"KUBESESSIONS_STATE_STORE_{k}": base64.b64decode(v).decode() for k, v in secret.data.items()}
    assert set(secret.data) == {"ENDPOINT", "BUCKET", "REGION", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY"}
    config = StoreConfig.from_env(env)
    assert config is not None and config.endpoint.startswith("http://127.0.0.1:")
    store = StateStore(config)
    key = f"sessions/{namespace}/p/uid/state.tar"
    script = (
        "import sys, urllib.request as u\n"
        f"u.urlopen(u.Request({store.presign_put(key)!r}, data=b'from a pod', method='PUT'))\n"
        f"sys.exit(0 if u.urlopen({store.presign_get(key)!r}).read() == b'from a pod' else 5)\n"
    )
    kube.core.create_namespaced_pod(namespace, script_pod("store", script))
    pod = await_pod(kube, namespace, "store", terminal, 60, "the pod to finish")
    assert pod.status.phase == "Succeeded", pod.status.container_statuses[0].state
    store.close()
