"""The client as a newcomer meets it: where it looks for the gateway, one reply shape for
``run`` and ``session.run``, distinct names for the two timeouts, ``stream`` refused where it
cannot stream, snake_case replies, and an ``AsyncClient`` that leaves nothing unclosed."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from kubesessions.client import AsyncClient, Client, Forbidden, RunFailed
from kubesessions.client._core import IN_CLUSTER_URL
from kubesessions.client.errors import from_problem
from kubesessions.localcluster import binaries

from .fakegateway import FAST, FakeGateway

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def test_the_default_url_is_the_gateway_of_the_readmes_helm_install() -> None:
    readme = (REPO / "README.md").read_text()
    install = re.search(r"^helm install (\S+) charts/kube-sessions -n (\S+)", readme, re.MULTILINE)
    assert install, "the README shows a helm install"
    release, namespace = install.groups()
    helm = binaries.find_binary("helm")
    if helm is None:
        pytest.fail("helm not found: run `make binaries` (it builds helm into the cache)")
    chart = str(REPO / "charts/kube-sessions")
    rendered = subprocess.run(
        [str(helm), "template", release, chart, "-n", namespace, "--set", "image.tag=0.1.0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (service,) = (
        d
        for d in yaml.safe_load_all(rendered.stdout)
        if d and d["kind"] == "Service" and d["metadata"]["name"].endswith("-gateway")
    )
    port = service["spec"]["ports"][0]["port"]
    host = f"{service['metadata']['name']}.{namespace}.svc"
    assert (f"http://{host}" if port == 80 else f"http://{host}:{port}") == IN_CLUSTER_URL


def test_kubesessions_url_names_the_gateways_in_fail_over_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBESESSIONS_URL", "http://a:8000/,http://b:8000")
    assert Client(token="t").endpoints.urls == ["http://a:8000", "http://b:8000"]
    monkeypatch.delenv("KUBESESSIONS_URL")
    assert Client(token="t").endpoints.urls == [IN_CLUSTER_URL]


def test_run_refuses_stream_and_names_client_stream(fake: tuple[FakeGateway, str]) -> None:
    with Client(fake[1], token="t", retry=FAST) as client:
        with pytest.raises(ValueError, match=r"client\.stream\(") as err:
            client.run({"app": "counter", "input": {}, "session": "new", "stream": True})
        assert "stream" in str(err.value)
        assert fake[0].seen == [], "nothing was sent"


async def test_async_run_refuses_stream_too(fake: tuple[FakeGateway, str]) -> None:
    async with AsyncClient(fake[1], token="t", retry=FAST) as client:
        with pytest.raises(ValueError, match=r"client\.stream\("):
            await client.run({"app": "counter", "input": {}, "stream": True})


def test_session_run_has_the_shape_of_client_run(fake: tuple[FakeGateway, str]) -> None:
    with Client(fake[1], token="t", retry=FAST) as client:
        direct = client.run({"app": "counter", "input": {"add": 1}, "session": "new"})
        with client.session("counter", session_timeout=60) as session:
            through = session.run({"add": 1})
    assert set(through) == set(direct) and through["output"] == {"total": 1}
    assert through["session_id"] == session.id


async def test_async_session_run_has_the_shape_of_client_run(fake: tuple[FakeGateway, str]) -> None:
    async with AsyncClient(fake[1], token="t", retry=FAST) as client:
        direct = await client.run({"app": "counter", "input": {"add": 1}, "session": "new"})
        async with client.session("counter", session_timeout=60) as session:
            through = await session.run({"add": 1})
    assert set(through) == set(direct) and through["session_id"] == session.id


def test_every_run_carries_its_own_call_id(fake: tuple[FakeGateway, str]) -> None:
    with Client(fake[1], token="t", retry=FAST) as client:
        client.run({"app": "counter", "input": {}, "session": "new"})
        client.run({"app": "counter", "input": {}, "session": "new"})
        list(client.stream({"app": "counter", "input": {}, "session": "new"}))
    keys = [headers.get("Idempotency-Key") for _, _, headers in fake[0].seen]
    assert len(keys) == 3 and all(keys) and len(set(keys)) == 3, keys


def test_the_two_timeouts_have_distinct_names(fake: tuple[FakeGateway, str]) -> None:
    with Client(fake[1], token="t", request_timeout=30) as client:
        assert client.request_timeout == 30
        with client.session("counter", session_timeout=45):
            pass
    assert fake[0].created[-1]["session_timeout"] == 45
    with pytest.raises(TypeError, match="timeout"):
        Client(fake[1], timeout=30)  # type: ignore[call-arg]


def test_replies_are_read_in_snake_case_only() -> None:
    assert from_problem(500, {"code": "RUN_FAILED", "error_type": "ValueError"}).error_type == "ValueError"  # type: ignore[attr-defined]
    camel = from_problem(500, {"code": "RUN_FAILED", "errorType": "ValueError"})
    assert isinstance(camel, RunFailed) and camel.error_type is None
    assert isinstance(from_problem(403, {"code": "FORBIDDEN", "detail": "no get"}), Forbidden)


def test_async_client_used_without_async_with_leaves_nothing_unclosed(fake: tuple[FakeGateway, str]) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio
        from kubesessions.client import AsyncClient

        async def main():
            client = AsyncClient({fake[1]!r}, token="t")
            print((await client.run({{"app": "counter", "input": {{}}, "session": "new"}}))["output"])
            async for word in client.stream({{"app": "counter", "input": {{}}, "session": "new"}}):
                print(word)

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["{'total':", "1}", "a", "b"]
    assert "Unclosed" not in done.stderr and "unclosed" not in done.stderr, done.stderr
