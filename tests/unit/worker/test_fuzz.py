"""The worker's HTTP surface under a bounded fuzz: bad JSON, huge bodies, wrong tokens, bad call
ids, garbage on the wire and slowloris-style partial requests, against a real worker process.
Each bad request gets a clear 4xx (never a 5xx, never a hang), and the worker keeps serving its
session: the counter's total is exactly the number of good adds made around the fuzz."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .harness import AUTH
from .test_process import Proc, worker_process

pytestmark = pytest.mark.unit

COUNTER = "kubesessions_worker.examples.counter:Counter"
MAX_BODY = 64 * 1024
ROUNDS = 120  # random bad requests; seeded, so a failure repeats
Fuzz = Callable[[aiohttp.ClientSession, str, random.Random], Awaitable[tuple[int, Any]]]


async def _answer(resp: aiohttp.ClientResponse) -> tuple[int, Any]:
    text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


async def _post(
    http: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    async with http.post(f"{url}/run", data=data, headers=headers) as resp:
        return await _answer(resp)


async def bad_json(http: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[int, Any]:
    body = rng.choice(
        [
            rng.randbytes(rng.randrange(1, 200)),
            b'{"input": ',
            b"[1, 2, 3]",
            b'"input"',
            b'{"inputs": 1}',
            b'{"input": 1, "stream": "yes"}',
            b"[" * 20_000 + b"]" * 20_000,  # nesting deeper than the parser goes
            b'{"input": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
            b"\xff\xfe{}",
            b"",
        ]
    )
    return await _post(http, url, body, {**AUTH, "Content-Type": "application/json"})


async def huge_body(http: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[int, Any]:
    body = json.dumps({"input": "x" * (MAX_BODY + rng.randrange(1, 4 * MAX_BODY))}).encode()
    return await _post(http, url, body, {**AUTH, "Content-Type": "application/json"})


async def wrong_token(http: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[int, Any]:
    headers = rng.choice(
        [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer " + rng.randbytes(16).hex()},
            {"Authorization": AUTH["Authorization"][:-1]},
            {"Authorization": AUTH["Authorization"] + "x"},
        ]
    )
    path = rng.choice(["/run", "/status", "/metrics", "/close", "/keepalive"])
    method = "GET" if path in ("/status", "/metrics") else "POST"
    async with http.request(method, f"{url}{path}", json={"input": {"add": 1}}, headers=headers) as resp:
        return await _answer(resp)


async def bad_key(http: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[int, Any]:
    key = rng.choice(["x" * 201, "caf\u00e9".encode().decode("latin-1"), "a\tb"])
    body = json.dumps({"input": {"add": 1}}).encode()
    return await _post(http, url, body, {**AUTH, "Idempotency-Key": key, "Content-Type": "application/json"})


async def garbage_on_the_wire(_: aiohttp.ClientSession, url: str, rng: random.Random) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        rng.choice(
            [
                rng.randbytes(rng.randrange(1, 300)) + b"\r\n\r\n",
                b"POST /run HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                b"POST /run HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
                b"POST /run HTTP/1.1\r\n" + b"X: y\r\n" * 1000 + b"\r\n",
            ]
        )
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(200), 10)
    writer.close()
    status = int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else 400  # closed: refused
    return status, answer.decode(errors="replace")


FUZZ: list[Fuzz] = [bad_json, huge_body, wrong_token, bad_key, garbage_on_the_wire]


async def add_one(http: aiohttp.ClientSession, proc: Proc) -> int:
    async with http.post(f"{proc.url}/run", json={"input": {"add": 1}}, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        total: int = (await resp.json())["output"]["total"]
        return total


async def test_bad_requests_get_clear_4xx_and_the_session_keeps_its_state(tmp_path: Path) -> None:
    rng = random.Random(16)
    async with (
        worker_process(tmp_path, COUNTER, f"--max-body-bytes={MAX_BODY}") as proc,
        aiohttp.ClientSession() as http,
    ):
        adds = 0
        for n in range(ROUNDS):
            fuzz = rng.choice(FUZZ)
            status, body = await asyncio.wait_for(fuzz(http, proc.url, rng), 15)
            assert 400 <= status < 500, f"round {n} ({fuzz.__name__}): {status} {str(body)[:300]}"
            if isinstance(body, dict):
                assert body.get("code") and body.get("detail"), f"round {n}: a problem+json with a code"
            if n % 10 == 0:
                adds += 1
                assert await add_one(http, proc) == adds, f"round {n} ({fuzz.__name__}) changed the session"
        assert proc.process.returncode is None, "the worker still runs"


async def test_slow_and_stalled_requests_do_not_hold_up_the_session(tmp_path: Path) -> None:
    async with (
        worker_process(tmp_path, COUNTER) as proc,
        aiohttp.ClientSession() as http,
    ):
        host, port = proc.url.removeprefix("http://").split(":")
        stalled = []
        for n in range(20):
            reader, writer = await asyncio.open_connection(host, int(port))
            # Half a request: headers that never end, or a body shorter than its length says.
            writer.write(
                b"POST /run HTTP/1.1\r\nHost: w\r\nX-Slow: "
                if n % 2
                else b"POST /run HTTP/1.1\r\nHost: w\r\nAuthorization: "
                + AUTH["Authorization"].encode()
                + b'\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"input":'
            )
            await writer.drain()
            stalled.append((reader, writer))

        async def drip() -> None:  # slowloris: a byte at a time on every half request
            while True:
                for _, writer in stalled:
                    writer.write(b"a")
                await asyncio.sleep(0.1)

        dripping = asyncio.create_task(drip())
        try:
            for expected in range(1, 11):
                started = time.monotonic()
                assert await add_one(http, proc) == expected
                assert time.monotonic() - started < 2.0, "a good call waited on the stalled ones"
        finally:
            dripping.cancel()
            for _, writer in stalled:
                writer.close()
        assert await add_one(http, proc) == 11
