"""Shared by the benchmarks that need a cluster: CRDs installed, a namespace ready for pods,
and the operator running."""

from __future__ import annotations

import asyncio
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

import aiohttp
from kubernetes import client, utils
from kubernetes_asyncio import client as aclient

from kubesessions.kube.informer import Informer

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
# full: as before kubesessions.kube.slimimports (its install() made a no-op).
OPERATOR_COMMAND = {
    "slim": [str(Path(sys.executable).parent / "kubesessions")],
    "full": [
        sys.executable,
        "-c",
        "import sys; from kubesessions.kube import slimimports; slimimports.install = lambda: None; "
        "from kubesessions.cli.entry import main; sys.argv[0] = 'kubesessions'; main()",
    ],
    # The API connection pool as large as the client's own default, to weigh the cap's cost.
    "pool100": [
        sys.executable,
        "-c",
        "import sys; from kubesessions.kube import slimimports; slimimports.install(); "
        "from kubesessions.kube import kubeapi; kubeapi.API_CONNECTIONS = 100; "
        "from kubesessions.cli.entry import main; sys.argv[0] = 'kubesessions'; main()",
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
    """Feed each object (type, object as a plain dict) to ``until`` until it returns True or
    ``limit`` seconds pass: every object listed first (as ADDED), then each change.

    ``list_objects`` is a list call of the sync client the bench uses (``core.list_namespaced_pod``);
    the watching itself is the project's one list-then-watch loop (:mod:`kubesessions.kube.informer`,
    on kubernetes_asyncio, with the same connection settings), in an event loop of this thread.
    Objects stay dicts: model objects cost the bench's CPU and make it a slow watcher.
    ``established`` is set once the list is in: every later change comes through the watch, so a
    bench need not guess with a sleep."""
    asyncio.run(_watch(list_objects, args, until, limit, established))


async def _watch(
    list_objects: Callable[..., object],
    args: tuple[str, ...],
    until: Callable[[str, dict[str, object]], bool],
    limit: float,
    established: threading.Event | None,
) -> None:
    sync_api: Any = list_objects.__self__  # type: ignore[attr-defined]  # a bound method of a sync API
    async with aclient.ApiClient(_async_configuration(sync_api.api_client.configuration)) as api:
        lister = getattr(getattr(aclient, type(sync_api).__name__)(api), list_objects.__name__)
        done = asyncio.Event()

        def changed(kind: str, obj: dict[str, object]) -> None:
            if not done.is_set() and until(kind, obj):
                done.set()

        def listed(items: list[dict[str, object]]) -> None:
            for item in items:
                changed("ADDED", item)
            if established is not None:
                established.set()

        task = asyncio.create_task(Informer(f"bench watch {args}", lister, args, listed, changed).run())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), limit)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _async_configuration(sync: client.Configuration) -> aclient.Configuration:
    """The sync client's connection settings (server, CA, client certificate) for kubernetes_asyncio."""
    settings = aclient.Configuration(host=sync.host)
    settings.ssl_ca_cert, settings.cert_file, settings.key_file = (
        sync.ssl_ca_cert,
        sync.cert_file,
        sync.key_file,
    )
    settings.verify_ssl = sync.verify_ssl
    settings.api_key, settings.api_key_prefix = dict(sync.api_key), dict(sync.api_key_prefix)
    return settings


def await_established(established: threading.Event, what: str, timeout: float = 30) -> None:
    if not established.wait(timeout):
        raise RuntimeError(f"the {what} watch did not open within {timeout:.0f}s")


async def gateway_run(
    http: aiohttp.ClientSession, gateway: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[float, dict[str, Any]]:
    """One `/v1/run` through the gateway: its milliseconds and its (200) reply."""
    began = time.perf_counter()
    async with http.post(f"{gateway}/v1/run", headers=headers, json=body) as r:
        reply = await r.json()
        assert r.status == 200, reply
    return (time.perf_counter() - began) * 1000, reply
