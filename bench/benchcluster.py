"""Shared by the benchmarks that need a cluster: CRDs installed, a namespace ready for pods,
and the operator running."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, utils, watch

REPO = Path(__file__).parent.parent


def prepare(api: client.ApiClient, namespace: str, timeout: float = 60) -> None:
    """Install the committed CRDs and create ``namespace``; return once pods can be admitted
    there (its default ServiceAccount exists)."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        utils.create_from_yaml(api, str(path))
    create_namespace(api, namespace, timeout)


def session(name: str, timeout: int, app: str = "echo") -> dict[str, Any]:
    """A Session manifest for ``app`` with idle timeout ``timeout``."""
    return {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {"app": app, "sessionTimeout": timeout},
    }


def echo_app(name: str = "echo") -> dict[str, Any]:
    """An App manifest for the echo example worker."""
    return {
        "apiVersion": "kubesessions.io/v1alpha1",
        "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "image": "ghcr.io/kube-sessions/kube-sessions-worker:0.1.0",
            "entrypoint": "kubesessions_worker.examples.echo:Echo",
        },
    }


def create_namespace(api: client.ApiClient, namespace: str, timeout: float = 60) -> None:
    """Create ``namespace``; return once pods can be admitted there."""
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    deadline = time.monotonic() + timeout
    while not core.list_namespaced_service_account(namespace).items:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no default ServiceAccount in {namespace} after {timeout:.0f}s")
        time.sleep(0.1)


# BENCH_OPERATOR_IMPORTS picks the operator's command: "slim" (default) is `kubesessions`;
# the others run the same entry point with one lever undone, to measure it side by side.
# full: as before kubesessions.slimimports (its install() made a no-op).
OPERATOR_COMMAND = {
    "slim": [str(Path(sys.executable).parent / "kubesessions")],
    "full": [
        sys.executable,
        "-c",
        "import sys; from kubesessions import slimimports; slimimports.install = lambda: None; "
        "from kubesessions.entry import main; sys.argv[0] = 'kubesessions'; main()",
    ],
    # The API connection pool as large as the client's own default, to weigh the cap's cost.
    "pool100": [
        sys.executable,
        "-c",
        "import sys; from kubesessions import slimimports; slimimports.install(); "
        "from kubesessions import handlers; handlers.API_CONNECTIONS = 100; "
        "from kubesessions.entry import main; sys.argv[0] = 'kubesessions'; main()",
    ],
    # Where the memory goes: the live allocations by line, written every 10 s (the last one
    # before the operator stops holds the sessions) to bench-results/operator.tracemalloc.txt.
    # Tracing costs memory and CPU itself: RSS and latencies from such a run mislead.
    "tracemalloc": [sys.executable, "-c", (Path(__file__).parent / "tracemalloc_operator.py").read_text()],
}


@contextlib.contextmanager
def operator(
    kubeconfig: Path, namespace: str, metrics_port: int, log: Path, *args: str, timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """`kubesessions operator` for ``namespace`` (stderr to ``log``), from when its /metrics
    answers until the block ends."""
    with log.open("wb") as err:
        op = subprocess.Popen(
            [
                *OPERATOR_COMMAND[os.environ.get("BENCH_OPERATOR_IMPORTS", "slim")],
                "operator",
                "--namespace",
                namespace,
                "--metrics-port",
                str(metrics_port),
                *args,
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5):
                    break
            except OSError:
                if op.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the operator did not serve /metrics within {timeout:.0f}s; see {log}"
                    ) from None
                time.sleep(0.1)
        yield op
    finally:
        op.terminate()
        op.wait(timeout=30)


def watch_objects(
    list_objects: Callable[..., object],
    *args: str,
    until: Callable[[str, dict[str, object]], bool],
    limit: float,
    established: threading.Event | None = None,
) -> None:
    """Feed each watch event (type, object as a plain dict) to ``until`` until it returns True
    or ``limit`` seconds pass. Objects stay dicts (turning each pod into model objects costs the
    bench's CPU and makes it a slow watcher), and a watch the API server ends early, as it
    does to watchers that fall behind, is opened again from where it was.

    ``established`` is set once the watch is known to be open: its first event, or the bookmark
    the API server sends after the initial list (asked for with sendInitialEvents, which the
    core API's list calls take), so a bench need not guess with a sleep."""
    deadline = time.monotonic() + limit
    version: str | None = None
    while (left := deadline - time.monotonic()) >= 1:  # a watch timeout of 0 would mean none
        w = watch.Watch(return_type="object")
        options: dict[str, object] = {"resource_version": version} if version else {}
        if established is not None and not version:
            options |= {
                "allow_watch_bookmarks": True,
                "send_initial_events": True,
                "resource_version_match": "NotOlderThan",
            }
        try:
            for event in w.stream(list_objects, *args, timeout_seconds=int(left), **options):
                if established is not None:
                    established.set()
                if event["type"] == "BOOKMARK":
                    continue
                if until(event["type"], event["object"]):
                    w.stop()
                    return
        except (urllib3.exceptions.HTTPError, OSError):
            time.sleep(0.1)  # the connection dropped (or the cluster is going): try again
        version = w.resource_version


def await_established(established: threading.Event, what: str, timeout: float = 30) -> None:
    if not established.wait(timeout):
        raise RuntimeError(f"the {what} watch did not open within {timeout:.0f}s")
