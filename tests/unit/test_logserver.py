"""The process node's log endpoint: its query rules, tailing, and who may read, over real TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from kubesessions.localcluster.certs import Authority
from kubesessions.localcluster.logserver import (
    KUBELET_CLIENT,
    BadQuery,
    ContainerLog,
    LogQuery,
    LogServer,
    parse_query,
    tail_offset,
)

pytestmark = pytest.mark.unit


def test_query_keeps_follow_tail_and_limit() -> None:
    assert parse_query({"follow": "true", "tailLines": "3", "limitBytes": "10"}) == LogQuery(True, 3, 10)
    assert parse_query({"timestamps": "false"}) == LogQuery()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"timestamps": "true"}, "does not support timestamps"),
        ({"previous": "true", "sinceSeconds": "5"}, "does not support sinceSeconds, previous"),
        ({"tailLines": "x"}, "tailLines must be a whole number >= 0, got 'x'"),
        ({"limitBytes": "-1"}, "limitBytes must be a whole number >= 0, got -1"),
    ],
)
def test_query_refuses_what_the_node_cannot_do(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadQuery, match=message):
        parse_query(query)


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),
        (b"a\nb\n", 5, b"a\nb\n"),
        (b"a\nb\n", 0, b""),
        (b"", 3, b""),
    ],
)
def test_tail_offset(tmp_path: Path, content: bytes, lines: int, expected: bytes) -> None:
    path = tmp_path / "log"
    path.write_bytes(content)
    assert content[tail_offset(path, lines) :] == expected


def test_tail_offset_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "log"
    lines = [f"line {i} {'x' * 100}\n".encode() for i in range(3000)]  # ~300 KB, several chunks
    path.write_bytes(b"".join(lines))
    assert path.read_bytes()[tail_offset(path, 1500) :] == b"".join(lines[-1500:])


@dataclass
class Source:
    logs: dict[tuple[str, str, str], ContainerLog] = field(default_factory=dict)

    def container_log(self, namespace: str, pod: str, container: str) -> ContainerLog | None:
        return self.logs.get((namespace, pod, container))


@dataclass
class Served:
    url: str
    ca: Authority
    source: Source


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    ca = Authority(tmp_path / "pki")
    serving = ca.issue("node", "system:node:n", server_names=("127.0.0.1",))
    source = Source()
    server = LogServer(source, serving, ca.pair.cert)
    port = await server.start("127.0.0.1")
    yield Served(f"https://127.0.0.1:{port}", ca, source)
    await server.stop()


async def _get(served: Served, path: str, common_name: str | None) -> tuple[int, str]:
    tls = ssl.create_default_context(cafile=str(served.ca.pair.cert))
    if common_name is not None:
        client = served.ca.issue(common_name.replace(":", "-"), common_name)
        tls.load_cert_chain(client.cert, client.key)
    async with aiohttp.ClientSession() as http, http.get(served.url + path, ssl=tls) as resp:
        return resp.status, await resp.text()


async def test_serves_the_api_server_only(served: Served, tmp_path: Path) -> None:
    log = tmp_path / "main.log"
    log.write_text('{"message": "one"}\n{"message": "two"}\n')
    served.source.logs["ns", "p", "main"] = ContainerLog(log, running=lambda: False)
    assert await _get(served, "/containerLogs/ns/p/main", KUBELET_CLIENT) == (200, log.read_text())
    assert await _get(served, "/containerLogs/ns/p/main?tailLines=1", KUBELET_CLIENT) == (
        200,
        '{"message": "two"}\n',
    )
    assert (await _get(served, "/containerLogs/ns/p/main?limitBytes=5", KUBELET_CLIENT))[1] == '{"mes'
    status, text = await _get(served, "/containerLogs/ns/p/other", KUBELET_CLIENT)
    assert (status, text) == (404, "container other of pod ns/p has no log on this node\n")
    assert (await _get(served, "/containerLogs/ns/p/main?timestamps=true", KUBELET_CLIENT))[0] == 400
    # Another identity of the same CA (a node, a controller) is refused; no certificate, no TLS.
    assert (await _get(served, "/containerLogs/ns/p/main", "system:kube-scheduler"))[0] == 403
    with pytest.raises(aiohttp.ClientError):
        await _get(served, "/containerLogs/ns/p/main", None)


async def test_follow_ends_with_the_container_and_keeps_its_last_words(
    served: Served, tmp_path: Path
) -> None:
    log = tmp_path / "main.log"
    log.write_text("first\n")
    running = [True]
    served.source.logs["ns", "p", "main"] = ContainerLog(log, running=lambda: running[0])

    async def write_then_end() -> None:
        with log.open("a") as f:
            f.write("second\n")
        running[0] = False

    tls = ssl.create_default_context(cafile=str(served.ca.pair.cert))
    client = served.ca.issue("apiserver-client", KUBELET_CLIENT)
    tls.load_cert_chain(client.cert, client.key)
    async with (
        aiohttp.ClientSession() as http,
        http.get(served.url + "/containerLogs/ns/p/main?follow=true", ssl=tls) as resp,
    ):
        assert await resp.content.readline() == b"first\n"
        await write_then_end()
        assert await resp.content.read() == b"second\n"  # and the stream ended
