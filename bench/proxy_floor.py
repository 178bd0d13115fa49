"""The floor of a Python HTTP proxy on this machine, per server stack: what the gateway's ratio
to a direct call could be at best, before any of its own logic.

Ten echo workers (`kubesessions-worker`, uvloop) on loopback; a minimal proxy in front of them
that does only what the gateway's design requires of a forwarded call: take `POST /run`, ask
the worker named by the `X-Worker` header for the call as server-sent events (the gateway
always does: the worker's early headers keep one session's calls in order), read the events
and answer one JSON body. The same proxy is run on five stacks, all on uvloop:

- `aiohttp-app`: aiohttp's `web.Application` with one route (what the gateway runs on),
- `aiohttp-server`: aiohttp's low-level `web.Server` (no router, no middlewares),
- `uvicorn`: a bare ASGI callable on uvicorn with httptools,
- `aiohttp-app+raw-client`: the first, forwarding with the gateway's own client of its workers
  (`gateway/upstream.py`: asyncio protocols and httptools' parser),
- `raw`: an `asyncio.Protocol` with httptools' parser serving, and the same client: the floor
  of asyncio itself, with no framework.

The first three forward with aiohttp's client (one `ClientSession`, keep-alive), what the
gateway used before `gateway/upstream.py`.
The same client calls the workers directly and through each proxy, in ROUNDS rounds of
`bench/gateway.py`'s `measure` (the paths take short alternating turns) at 1 and 10 concurrent
clients (each on its own worker); the figures are the p50 ratio to direct in each round (median
over rounds) and the proxy's own CPU per call (its `/proc/PID/stat` before and after). Run with `.venv/bin/python bench/proxy_floor.py`;
writes `bench-results/proxy_floor.json`.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

sys.path.insert(0, str(Path(__file__).parent))
import report
import worker_echo
from gateway import measure

from kubesessions.localcluster.ports import free_port

WORKERS = 10
ROUNDS = 3  # each one bench/gateway.py's measure: the paths in short alternating turns
STACKS = ("aiohttp-app", "aiohttp-server", "uvicorn", "aiohttp-app+raw-client", "raw")
SSE_BODY = json.dumps({"stream": True, "input": worker_echo.PAYLOAD["input"]}).encode()


def reply_of(events: bytes) -> bytes:
    """The gateway's answer from a worker's events: the output's data and the done members."""
    output = done = b"null"
    for event in events.split(b"\n\n"):
        if event.startswith(b"event: output\ndata: "):
            output = event[20:]
        elif event.startswith(b"event: done\ndata: "):
            done = event[18:]
    return b'{"output":' + output + b',"done":' + done + b"}"


def worker_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
    }


# -- the proxies (each runs in its own process: `proxy_floor.py serve STACK PORT URLS TOKEN`) --


def serve(stack: str, port: int, urls: list[str], token: str) -> None:
    headers = worker_headers(token)
    runs = [f"{url}/run" for url in urls]

    async def aiohttp_proxy(raw_body: bytes, worker: int, http: aiohttp.ClientSession) -> bytes:
        async with http.post(runs[worker], data=raw_body, headers=headers) as resp:
            return reply_of(await resp.read())

    async def main() -> None:
        from aiohttp import web

        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
        if stack == "raw":
            await raw_proxy(port, urls, token)
        elif stack.startswith("aiohttp-"):
            forward = raw_forwarder(urls, token) if stack.endswith("raw-client") else None

            async def handle(request: web.BaseRequest) -> web.Response:
                body, worker = await request.read(), int(request.headers["X-Worker"])
                out = await (forward(worker, body) if forward else aiohttp_proxy(body, worker, http))
                return web.Response(body=out, content_type="application/json")

            if stack != "aiohttp-server":
                app = web.Application()
                app.router.add_post("/run", handle)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
            else:
                server = web.Server(handle, access_log=None)
                await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
        elif stack == "uvicorn":
            import uvicorn

            async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
                body = b""
                while True:
                    message = await receive()
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                worker = int(dict(scope["headers"])[b"x-worker"])
                out = await aiohttp_proxy(body, worker, http)
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": out})

            config = uvicorn.Config(
                asgi,
                host="127.0.0.1",
                port=port,
                loop="none",
                http="httptools",
                lifespan="off",
                access_log=False,
                log_level="warning",
            )
            await uvicorn.Server(config).serve()
        await asyncio.Event().wait()

    uvloop.run(main())


def raw_forwarder(urls: list[str], token: str) -> Callable[[int, bytes], Awaitable[bytes]]:
    """The gateway's own client of its workers (gateway/upstream.py: asyncio protocols and
    httptools' parser, kept-alive connections per worker)."""
    from kubesessions.gateway.upstream import Upstream

    upstream = Upstream(connect_timeout=5)
    headers = worker_headers(token)
    addresses = [url.removeprefix("http://").partition(":")[::2] for url in urls]

    async def forward(worker: int, body: bytes) -> bytes:
        host, port = addresses[worker]
        async with await upstream.request("POST", host, int(port), "/run", headers, body) as response:
            return reply_of(await response.read())

    return forward


async def raw_proxy(port: int, urls: list[str], token: str) -> None:
    """asyncio protocols and httptools, nothing else: the floor of a proxy in this language."""
    import httptools

    loop = asyncio.get_running_loop()
    forward = raw_forwarder(urls, token)

    class Downstream(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.worker, self.body = 0, bytearray()

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"x-worker":
                self.worker = int(value)

        def on_body(self, body: bytes) -> None:
            self.body += body

        def on_message_complete(self) -> None:
            task = loop.create_task(forward(self.worker, bytes(self.body)))
            self.body.clear()
            task.add_done_callback(self.answer)

        def answer(self, task: asyncio.Task[bytes]) -> None:
            out = task.result()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(out)
                + out
            )

    await loop.create_server(Downstream, "127.0.0.1", port)


# -- the measurement ----------------------------------------------------------------------------


async def start_proxy(stack: str, urls: list[str]) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "serve", stack, str(port), ",".join(urls), worker_echo.TOKEN
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http, asyncio.timeout(20):
        while True:  # until it listens; any answer but 200 is a broken proxy, not a slow one
            try:
                async with http.post(f"{url}/run", data=SSE_BODY, headers={"X-Worker": "0"}) as resp:
                    assert resp.status == 200, f"{stack}: HTTP {resp.status}: {await resp.text()}"
                    return proc, url
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)


async def run() -> dict[str, Any]:
    workers = [await worker_echo.start_worker("uvloop") for _ in range(WORKERS)]
    urls = [url for _, url in workers]
    proxies = {stack: await start_proxy(stack, urls) for stack in STACKS}
    direct_headers = {"Authorization": f"Bearer {worker_echo.TOKEN}", "Content-Type": "application/json"}
    direct_body = json.dumps(worker_echo.PAYLOAD).encode()
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

            def via(stack: str) -> Callable[[int], Awaitable[None]]:
                url = f"{proxies[stack][1]}/run"

                async def once(i: int) -> None:
                    async with http.post(url, data=SSE_BODY, headers={"X-Worker": str(i)}) as resp:
                        await resp.read()
                        assert resp.status == 200, resp.status

                return once

            async def direct(i: int) -> None:
                async with http.post(f"{urls[i]}/run", data=direct_body, headers=direct_headers) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status

            paths = {"direct": direct, **{stack: via(stack) for stack in STACKS}}
            pids = {stack: proc.pid for stack, (proc, _) in proxies.items()}
            for _ in range(ROUNDS):
                for clients in (1, 10):
                    for name, figures in (await measure(clients, paths, pids)).items():
                        rounds.setdefault(f"{name}_{clients}", []).append(figures)
    finally:
        for proc, _ in [*workers, *proxies.values()]:
            proc.terminate()
            await proc.wait()
    return summarise(rounds)


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": ROUNDS, "workers": WORKERS, "stacks": {}}
    for clients in (1, 10):
        direct = rounds[f"direct_{clients}"]
        out[f"direct_{clients}_p50_ms"] = statistics.median(r["p50_ms"] for r in direct)
        for stack in STACKS:
            mine = rounds[f"{stack}_{clients}"]
            out["stacks"].setdefault(stack, {})[f"{clients}_clients"] = {
                "p50_ms": statistics.median(r["p50_ms"] for r in mine),
                "p50_ratio": statistics.median(
                    m["p50_ms"] / d["p50_ms"] for m, d in zip(mine, direct, strict=True)
                ),
                "calls_per_second": statistics.median(r["calls_per_s"] for r in mine),
                "cpu_ms_per_call": statistics.median(r["cpu_ms_per_call"] for r in mine),
            }
    return out


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        stack, port, urls, token = sys.argv[2:6]
        serve(stack, int(port), urls.split(","), token)
        return
    os.environ.setdefault("KUBESESSIONS_LOG_LEVEL", "WARNING")
    started = time.time()
    results = uvloop.run(run())
    results["load_average"] = os.getloadavg()
    results["started"] = started
    (report.RESULTS / "proxy_floor.json").write_text(json.dumps(results, indent=2))
    print(f"{'stack':<24}{'p50/direct c=1':>16}{'c=10':>8}{'CPU ms/call c=1':>17}{'c=10':>8}")
    for stack, figures in results["stacks"].items():
        one, ten = figures["1_clients"], figures["10_clients"]
        print(
            f"{stack:<24}{one['p50_ratio']:>15.2f}x{ten['p50_ratio']:>7.2f}x"
            f"{one['cpu_ms_per_call']:>17.3f}{ten['cpu_ms_per_call']:>8.3f}"
        )
    print(
        f"direct p50: {results['direct_1_p50_ms']:.3f} ms (1 client), {results['direct_10_p50_ms']:.3f} ms (10)"
    )


if __name__ == "__main__":
    main()
