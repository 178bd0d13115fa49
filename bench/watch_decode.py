"""Watch decoding: the standard library's json against orjson and msgspec on a burst's event mix.

The lines are what the API server sends on a watch during the 100-Session burst, built from
the operator's own manifests (children.build_pod for the worker Pod, the Session the bench
creates) with what the API server adds (uid, resourceVersion, managedFields, status as the
node fills it): per Session 1 ADDED + 3 MODIFIED Session events (status writes) and 1 ADDED +
4 MODIFIED Pod events (scheduled, address, running, ready). Each decoder turns every line
(bytes, as read off the socket) into plain dicts; kubernetes_asyncio's Watch, which the
informer used before, also builds a V1Pod model from each Pod event (timed alongside). The
figure is microseconds per event, median of ROUNDS rounds; ratios to the standard library in
the same run. Run with `.venv/bin/python bench/watch_decode.py`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import orjson
from kubernetes_asyncio.client import ApiClient

sys.path.insert(0, str(Path(__file__).parent))
import benchcluster
import report

from kubesessions.api.models import AppSpec, SessionSpec
from kubesessions.control.decide import children

SESSIONS = 100
ROUNDS = 5
NS = "bench"
STAMP = "2026-12-07T16:00:00Z"


def _managed(manager: str, operation: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": STAMP,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    return entry | ({"subresource": subresource} if subresource else {})


def _fields(obj: Any) -> Any:
    """managedFields' FieldsV1 shape of ``obj``: every key as ``f:<key>``, leaves as {}."""
    if isinstance(obj, dict):
        return {f"f:{k}": _fields(v) for k, v in obj.items()}
    return {}


def pod_events(i: int) -> list[dict[str, Any]]:
    app = AppSpec.model_validate(
        {"image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0", "entrypoint": "x:Y"}
    )
    spec = SessionSpec.model_validate({"app": "echo", "sessionTimeout": 3600})
    ref = children.SessionRef(name=f"s{i}", namespace=NS, uid=f"00000000-0000-4000-8000-{i:012d}")
    pod = children.build_pod(ref, "echo", app, spec)
    meta = pod["metadata"]
    meta |= {
        "uid": f"10000000-0000-4000-8000-{i:012d}",
        "resourceVersion": str(1000 + i),
        "creationTimestamp": STAMP,
        "managedFields": [_managed("kopf", "Update", _fields({"metadata": meta, "spec": pod["spec"]}))],
    }
    pod["spec"] |= {"nodeName": "", "schedulerName": "default-scheduler", "dnsPolicy": "ClusterFirst"}
    pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    events = [{"type": "ADDED", "object": copy.deepcopy(pod)}]
    condition = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": STAMP}
    steps: list[dict[str, Any]] = [
        {"conditions": [condition]},
        {"hostIP": "10.0.0.1", "podIP": f"10.1.{i // 250}.{i % 250}", "startTime": STAMP},
        {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "worker",
                    "ready": False,
                    "restartCount": 0,
                    "image": app.image,
                    "imageID": "sha256:" + "0" * 64,
                    "containerID": "process://" + "1" * 64,
                    "started": True,
                    "state": {"running": {"startedAt": STAMP}},
                    "lastState": {},
                }
            ],
        },
        {"conditions": [condition, {**condition, "type": "Ready"}, {**condition, "type": "ContainersReady"}]},
    ]
    for n, step in enumerate(steps):
        pod["status"] |= step
        pod["metadata"]["resourceVersion"] = str(2000 + 10 * i + n)
        if n == 0:
            pod["spec"]["nodeName"] = "node-1"
        pod["metadata"]["managedFields"] = [
            *pod["metadata"]["managedFields"][:1],
            _managed("kubelet", "Update", _fields({"status": pod["status"]}), "status"),
        ]
        events.append({"type": "MODIFIED", "object": copy.deepcopy(pod)})
    return events


def session_events(i: int) -> list[dict[str, Any]]:
    session = benchcluster.session(f"s{i}", 3600)
    session["metadata"] |= {
        "namespace": NS,
        "uid": f"00000000-0000-4000-8000-{i:012d}",
        "resourceVersion": str(1000 + i),
        "generation": 1,
        "creationTimestamp": STAMP,
        "finalizers": ["kubesessions.io/cleanup"],
    }
    events = [{"type": "ADDED", "object": copy.deepcopy(session)}]
    statuses = [
        {"phase": "Pending", "observedGeneration": 1},
        {"phase": "Starting", "podName": f"s{i}", "observedGeneration": 1},
        {
            "phase": "Ready",
            "podName": f"s{i}",
            "endpoint": f"http://s{i}.{NS}.svc:8080",
            "tokenSecret": f"s{i}-token",
            "readyAt": STAMP,
            "observedGeneration": 1,
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": STAMP, "reason": "Ready"}
            ],
        },
    ]
    for status in statuses:
        session["status"] = status
        events.append({"type": "MODIFIED", "object": copy.deepcopy(session)})
    return events


def lines() -> tuple[list[bytes], list[bytes]]:
    """(all lines in the burst's order, the Pod lines alone), compact as the API server sends."""
    pods = [
        json.dumps(e, separators=(",", ":")).encode() + b"\n" for i in range(SESSIONS) for e in pod_events(i)
    ]
    sessions = [
        json.dumps(e, separators=(",", ":")).encode() + b"\n"
        for i in range(SESSIONS)
        for e in session_events(i)
    ]
    return pods + sessions, pods


def timed(decode: Callable[[bytes], Any], data: list[bytes]) -> float:
    """Microseconds per line, the median of ROUNDS passes."""
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for line in data:
            decode(line)
        rounds.append((time.perf_counter() - started) / len(data) * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    mix, pods = lines()
    api = ApiClient()  # only its deserializer is used; it wants a running loop
    decoder = msgspec.json.Decoder()

    def kubernetes_asyncio_pod(line: bytes) -> Any:
        # What its Watch.unmarshal_event does for a typed list call (list_namespaced_pod).
        js = json.loads(line.decode())
        return api.deserialize(SimpleNamespace(data=json.dumps(js["object"])), "V1Pod")

    decoders: dict[str, Callable[[bytes], Any]] = {
        "json": json.loads,
        "orjson": orjson.loads,
        "msgspec": decoder.decode,
    }
    for name, decode in decoders.items():  # all three must read the lines alike
        assert decode(mix[0]) == json.loads(mix[0]), name
    results: dict[str, Any] = {
        "events": len(mix),
        "mean_event_bytes": round(sum(map(len, mix)) / len(mix)),
        "mean_pod_event_bytes": round(sum(map(len, pods)) / len(pods)),
        "us_per_event": {name: timed(decode, mix) for name, decode in decoders.items()},
        "us_per_pod_event_kubernetes_asyncio_model": timed(kubernetes_asyncio_pod, pods[:100]),
    }
    base = results["us_per_event"]["json"]
    results["ratio_to_json"] = {name: us / base for name, us in results["us_per_event"].items()}
    rows = [
        ("events in the mix", str(results["events"]), ""),
        ("mean event bytes", str(results["mean_event_bytes"]), ""),
        *(
            (f"{name} us/event", f"{us:.1f}", f"{results['ratio_to_json'][name]:.2f}x json")
            for name, us in results["us_per_event"].items()
        ),
        (
            "kubernetes_asyncio Watch, Pod event (json + V1Pod)",
            f"{results['us_per_pod_event_kubernetes_asyncio_model']:.1f}",
            "what the informer paid per Pod event before",
        ),
    ]
    await api.close()
    report.write("watch_decode", results, rows)


if __name__ == "__main__":
    asyncio.run(main())
