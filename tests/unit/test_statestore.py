"""The state store against a real SeaweedFS (the local cluster's, started here on loopback):
presigned URLs that open exactly one key for a short time, listing, deletion, the bucket; and a
worker's suspend and resume through those URLs, as the operator will hand them over."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubesessions.api.names import state_key
from kubesessions.localcluster import binaries, objectstore, processes
from kubesessions.localcluster.ports import free_port
from kubesessions.statestore import StoreConfig, StoreConfigError, StoreError
from kubesessions.statestore.store import StateStore

pytestmark = pytest.mark.unit

ENV = "KUBESESSIONS_STATE_STORE_"


@pytest.fixture(scope="module")
def store_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    weed = binaries.find_binary("weed")
    if weed is None:
        pytest.skip("SeaweedFS (weed) is not built: `make binaries` builds it (needs Go)")
    root = tmp_path_factory.mktemp("store")
    started: list[processes.ProcessRecord] = []
    ports = {name: free_port() for name in objectstore.PORTS}

    def launch(name: str, argv: list[str]) -> None:
        started.append(processes.spawn(name, argv, root / f"{name}.log"))

    try:
        yield objectstore.ready(root, objectstore.launch(root, "127.0.0.1", weed, launch, ports))
    finally:
        assert processes.stop(started, grace=3.0) == []
        objectstore.clean(root, ports)
        assert objectstore.leftovers(root, ports) == []


@pytest.fixture
def store(store_env: dict[str, str]) -> Iterator[StateStore]:
    config = StoreConfig.from_env(store_env)
    assert config is not None
    s = StateStore(config)
    yield s
    s.close()


def http(method: str, url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_config_from_the_environment() -> None:
    assert StoreConfig.from_env({}) is None  # no store: suspend is unavailable
    full = {
        f"{ENV}ENDPOINT": "http://10.0.0.5:8333/",
        f"{ENV}BUCKET": "b",
        f"{ENV}ACCESS_KEY_ID": "id",
        f"{ENV}SECRET_ACCESS_KEY": "secret",
    }
    config = StoreConfig.from_env(full)
    assert config is not None
    assert (config.endpoint, config.region) == ("http://10.0.0.5:8333", "us-east-1")
    assert "secret" not in repr(config)
    with pytest.raises(StoreConfigError, match=f"set {ENV}BUCKET, {ENV}SECRET_ACCESS_KEY"):
        StoreConfig.from_env({f"{ENV}ENDPOINT": "http://x:1", f"{ENV}ACCESS_KEY_ID": "id"})
    with pytest.raises(StoreConfigError, match=f"{ENV}ENDPOINT must be an http"):
        StoreConfig.from_env({**full, f"{ENV}ENDPOINT": "s3.example.com"})


def test_a_presigned_put_then_get_carries_the_object(store: StateStore) -> None:
    key = state_key("ns", "s1", "uid-1")
    assert http("PUT", store.presign_put(key), b"state bytes")[0] == 200
    assert http("GET", store.presign_get(key)) == (200, b"state bytes")


def test_a_url_opens_only_its_own_key_and_operation(store: StateStore) -> None:
    mine, other = state_key("ns", "a", "uid-a"), state_key("ns", "b", "uid-b")
    assert http("PUT", store.presign_put(other), b"b's state")[0] == 200
    get_mine = store.presign_get(mine)
    # The same signature on another session's key: refused (the key is part of what is signed).
    assert http("GET", get_mine.replace("/a/uid-a/", "/b/uid-b/"))[0] == 403
    put_mine = store.presign_put(mine)
    assert http("GET", put_mine)[0] == 403  # a PUT URL does not read
    assert http("PUT", get_mine, b"x")[0] == 403  # a GET URL does not write
    endpoint = store.config.endpoint
    assert http("GET", f"{endpoint}/{store.config.bucket}/{other}")[0] == 403  # no URL, no read
    assert http("GET", store.presign_get(other)) == (200, b"b's state")


def test_a_url_expires(store: StateStore) -> None:
    key = state_key("ns", "late", "uid-late")
    url = store.presign_put(key, seconds=1)
    time.sleep(2.5)  # no condition to await: the store's clock has to pass the expiry
    assert http("PUT", url, b"too late")[0] == 403
    with pytest.raises(ValueError, match=r"seconds must be in 1\.\.604800"):
        store.presign_get(key, seconds=0)


async def test_keys_and_delete(store: StateStore) -> None:
    keys = [state_key("keys", f"s{i}", f"u{i}") for i in range(3)]
    for key in keys:
        assert (await asyncio.to_thread(http, "PUT", store.presign_put(key), b"x"))[0] == 200
    assert sorted(await store.keys("sessions/keys/")) == sorted(keys)
    await store.delete(keys[0])
    await store.delete(keys[0])  # gone already: fine
    assert sorted(await store.keys("sessions/keys/")) == sorted(keys[1:])
    assert await store.keys("sessions/none/") == []


async def test_ensure_bucket_makes_it_once(store_env: dict[str, str]) -> None:
    config = StoreConfig.from_env({**store_env, f"{ENV}BUCKET": "another-bucket"})
    assert config is not None
    other = StateStore(config)
    with pytest.raises(StoreError, match="another-bucket"):
        await other.keys("")
    await other.ensure_bucket()
    await other.ensure_bucket()
    assert await other.keys("") == []
    other.close()


async def test_a_worker_suspends_and_resumes_through_the_store(store: StateStore, tmp_path: Path) -> None:
    from .worker.harness import AUTH, worker

    key = state_key("ns", "counter", "uid-counter")
    async with worker("Counter") as first:
        await first.call(42)
        async with first.client.post(
            "/suspend", json={"url": store.presign_put(key), "max_bytes": 1 << 20}, headers=AUTH
        ) as resp:
            saved = await resp.json()
            assert resp.status == 200, saved
    assert await store.keys("sessions/ns/counter/") == [key]
    async with worker("Counter") as second:
        body = {"url": store.presign_get(key), "sha256": saved["sha256"], "bytes": saved["bytes"]}
        async with second.client.post("/resume", json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        assert (await second.call(1))[1]["output"] == 43
