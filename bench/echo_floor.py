"""The floor of the worker's HTTP stack: a bare echo handler on what the worker runs on.

aiohttp's web server on the worker's event loop (``eventloop.run``: uvloop where installed),
no access log, one ``POST /run`` that answers the request's own body: what any aiohttp app
pays per round trip, with nothing of the worker (auth, queue, app thread, JSON). Started by
``bench/worker_echo.py`` in a subprocess, announced like the worker (a JSON log line
``listening on <url>`` on stderr), so the two are measured by the same client in the same run.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from kubesessions.common import eventloop


async def _run(request: web.Request) -> web.Response:
    return web.Response(body=await request.read(), content_type="application/json")


async def _readyz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main() -> None:
    app = web.Application()
    app.router.add_post("/run", _run)
    app.router.add_get("/readyz", _readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    print(json.dumps({"message": f"listening on http://{host}:{port}"}), file=sys.stderr, flush=True)
    await asyncio.Event().wait()  # until terminated


if __name__ == "__main__":
    eventloop.run(main())
