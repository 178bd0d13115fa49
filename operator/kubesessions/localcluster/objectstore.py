"""The local cluster's state store: SeaweedFS (``weed server -s3``), built from its released source.

Suspended sessions' state goes to an S3-compatible store (docs/suspend.md). ``up`` runs one on
an address the node's pods reach (process node: loopback; kubelet node: the pod bridge's
gateway address), with credentials made for this cluster, creates the bucket, and writes the
Secret ``kube-sessions-state-store`` (the chart's ``stateStore.existingSecret``) into the
``kube-sessions`` namespace. The same settings, as the operator's environment variables, are
kept in ``state-store.json`` in the state directory (mode 0600) for the operator the local
cluster's users run as a process (``localcluster env``, the test fixtures). Its data lives under
the state directory and is made afresh by every ``up``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubesessions.api.names import STATE_PREFIX, STATE_STORE_ENV_PREFIX, STATE_STORE_SECRET
from kubesessions.localcluster.state import ClusterError
from kubesessions.statestore import StoreConfig, open_store
from kubesessions.statestore.store import StateStore

BUCKET = "kube-sessions-state"
REGION = "us-east-1"
RELEASE_NAMESPACE = "kube-sessions"  # where the README installs the chart
STARTUP_TIMEOUT = 60.0
# The store's own services, each on a port of its own: nothing may fall back to a default port
# (two clusters on one machine), nor be derived as port + 10000 (it may be taken).
PORTS = tuple(
    f"store-{name}"
    for name in ("master", "master-grpc", "volume", "volume-grpc", "filer", "filer-grpc", "s3", "s3-grpc")
)

Launch = Callable[[str, list[str]], None]


def data_dir(root: Path) -> Path:
    return root / "store"


def settings_file(root: Path) -> Path:
    return root / "state-store.json"


@dataclass(frozen=True)
class Launched:
    endpoint: str
    env: dict[str, str]  # the operator's environment


def launch(root: Path, address: str, weed: Path, start: Launch, ports: dict[str, int]) -> Launched:
    """Start the store on ``address`` with ``ports`` (one for each of PORTS); :func:`ready`
    awaits it (the control plane starts meanwhile: the store takes seconds to take writes)."""
    folder = data_dir(root)
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    access, secret = f"ks{secrets.token_hex(8)}", secrets.token_urlsafe(30)
    identities = folder / "s3.json"
    identities.touch(mode=0o600)
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kube-sessions-operator",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    start("seaweedfs", server_args(weed, address, folder, ports, identities))
    endpoint = f"http://{address}:{ports['store-s3']}"
    env = {
        f"{STATE_STORE_ENV_PREFIX}ENDPOINT": endpoint,
        f"{STATE_STORE_ENV_PREFIX}BUCKET": BUCKET,
        f"{STATE_STORE_ENV_PREFIX}REGION": REGION,
        f"{STATE_STORE_ENV_PREFIX}ACCESS_KEY_ID": access,
        f"{STATE_STORE_ENV_PREFIX}SECRET_ACCESS_KEY": secret,
    }
    return Launched(endpoint, env)


def ready(root: Path, launched: Launched) -> dict[str, str]:
    """Await the store, make its bucket and write once through it (its first write waits for
    the filer to join the master, seconds a session's first suspend should not pay); then save
    the operator's environment in the state directory and return it."""
    _await_s3(launched.endpoint)
    config = StoreConfig.from_env(launched.env)
    assert config is not None
    store = open_store(config)
    try:
        asyncio.run(_first_write(store))
    finally:
        store.close()
    path = settings_file(root)
    path.touch(mode=0o600)
    path.write_text(json.dumps(launched.env, indent=1))
    return launched.env


async def _first_write(store: StateStore) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    key = f"{STATE_PREFIX}.ready"
    while True:
        try:
            await store.ensure_bucket()
            status = await asyncio.to_thread(_put, store.presign_put(key, seconds=60))
            if status == 200:
                await store.delete(key)
                return
            last = f"a PUT answered {status}"
        except Exception as exc:
            last = str(exc)
        if time.monotonic() > deadline:
            raise ClusterError(f"the state store took no write within {STARTUP_TIMEOUT:.0f}s: {last}")
        await asyncio.sleep(0.5)


def _put(url: str) -> int:
    request = urllib.request.Request(url, data=b"ready", method="PUT")  # noqa: S310 - presigned http
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def server_args(weed: Path, address: str, folder: Path, ports: dict[str, int], identities: Path) -> list[str]:
    return [
        str(weed),
        "server",
        f"-ip={address}",
        f"-ip.bind={address}",
        f"-dir={folder / 'volumes'}",
        f"-master.port={ports['store-master']}",
        f"-master.port.grpc={ports['store-master-grpc']}",
        "-master.telemetry=false",  # no reports to the project's servers (and no route out)
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",  # as many volumes as the disk holds
        f"-volume.port={ports['store-volume']}",
        f"-volume.port.grpc={ports['store-volume-grpc']}",
        "-volume.preStopSeconds=0",  # `down` need not wait 10 s for heartbeats nobody reads
        "-filer",
        f"-filer.port={ports['store-filer']}",
        f"-filer.port.grpc={ports['store-filer-grpc']}",
        f"-filer.localSocket={folder / 'filer.sock'}",
        # Chunks of 64 MB, not 4: a 256 MB state went up in 4.2-4.6 s instead of 5.5-6.4 s here.
        "-filer.maxMB=64",
        "-s3",
        f"-s3.port={ports['store-s3']}",
        f"-s3.port.grpc={ports['store-s3-grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={identities}",
    ]


def _await_s3(endpoint: str) -> None:
    """The S3 port answers (403 to an anonymous request is an answer)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(endpoint, timeout=2):  # noqa: S310 - our own http URL
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ClusterError(f"the state store did not answer at {endpoint} within {STARTUP_TIMEOUT:.0f}s: {last}")


def operator_env(root: Path) -> dict[str, str]:
    """The store's settings as the operator's environment; empty if this cluster has none."""
    try:
        found: dict[str, str] = json.loads(settings_file(root).read_text())
    except FileNotFoundError:
        return {}
    return found


def write_secret(server: str, tls: ssl.SSLContext, env: dict[str, str]) -> None:
    """The Secret the chart's operator reads (``stateStore.existingSecret``), in ``kube-sessions``."""
    _api(
        server, tls, "POST", "/api/v1/namespaces", {"metadata": {"name": RELEASE_NAMESPACE}}, conflict_ok=True
    )
    data = {
        key.removeprefix(STATE_STORE_ENV_PREFIX): base64.b64encode(value.encode()).decode()
        for key, value in env.items()
    }
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": STATE_STORE_SECRET, "namespace": RELEASE_NAMESPACE},
        "type": "Opaque",
        "data": data,
    }
    secrets_path = f"/api/v1/namespaces/{RELEASE_NAMESPACE}/secrets"
    if not _api(server, tls, "POST", secrets_path, body, conflict_ok=True):
        _api(server, tls, "PUT", f"{secrets_path}/{STATE_STORE_SECRET}", body)


def _api(
    server: str, tls: ssl.SSLContext, method: str, path: str, body: object, *, conflict_ok: bool = False
) -> bool:
    """One API call as the cluster's admin; False when it conflicted and that is fine."""
    request = urllib.request.Request(  # noqa: S310 - the cluster's own https URL
        f"{server}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=tls, timeout=10):  # noqa: S310
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 409 and conflict_ok:
            return False
        raise ClusterError(f"{method} {path} failed: {exc.code} {exc.read()[:300]!r}") from exc


def leftovers(root: Path, ports: dict[str, int]) -> list[str]:
    """What of the store is still on the machine after ``down``: its sockets (SeaweedFS puts
    the gRPC ones in /tmp, by port)."""
    left = [str(p) for p in data_dir(root).glob("*.sock")]
    for name, port in ports.items():
        if name.endswith("-grpc"):
            left += [str(p) for p in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock")]  # noqa: S108
    return left


def clean(root: Path, ports: dict[str, int]) -> None:
    """Remove the sockets a stopped store may leave (a killed one cannot)."""
    for path in leftovers(root, ports):
        Path(path).unlink(missing_ok=True)
