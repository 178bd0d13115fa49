"""One worker from start to exit: serve HTTP, set the app up, wait for the ending, close.

Endings: setup failed, POST /close, the app's end_session(), SIGTERM, or a safety net
(idle past timeout + grace with nobody culling it, or an unclaimed pool worker with no look
from the operator for as long; a call's sync code stuck past the call timeout + the call
grace). Each leaves a termination message.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import traceback
from contextlib import suppress

from aiohttp import web

from . import claim, http, termination
from .app import AppHost
from .gpu import GpuMonitor
from .runner import Runner
from .settings import Settings
from .termination import Ending, Reason

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> Ending:
    """Run the worker until it ends; returns how, after writing the termination message."""
    runner = Runner(
        AppHost(settings.app),
        session_id=settings.session_id,
        session_timeout=settings.session_timeout,
        queue_size=settings.queue_size,
        call_timeout=settings.call_timeout,
        call_grace=settings.call_grace,
        call_retention=settings.call_retention,
        call_retention_bytes=settings.call_retention_bytes,
        pooled=settings.pool,
    )
    # Before anything can be announced: a SIGTERM right after start must still end cleanly.
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop, Reason.TERMINATED, signal.Signals(sig).name)
    gpu = GpuMonitor(settings.gpu_interval)
    sampling = asyncio.create_task(gpu.run(), name="gpu")
    slot = claim.Slot(pooled=settings.pool)
    web_runner = web.AppRunner(
        http.build(runner, gpu, token=settings.token, max_body_bytes=settings.max_body_bytes, slot=slot),
        access_log=None,  # calls are logged by the runner; an access log would only add noise
        shutdown_timeout=5.0,
    )
    try:
        await web_runner.setup()
        try:
            await web.TCPSite(web_runner, settings.host, settings.port).start()
        except OSError as exc:  # e.g. the port is taken: as fatal as a failing setup
            ending = Ending(Reason.SETUP_FAILED, f"cannot listen on {settings.host}:{settings.port}: {exc}")
            log.error("%s", ending.message)
        else:
            log.info("listening on %s", ", ".join(_addresses(web_runner)))
            ending = await _run_session(runner, settings, slot)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await web_runner.cleanup()
        sampling.cancel()
        with suppress(asyncio.CancelledError):
            await sampling
        gpu.close()
    termination.write(settings.termination_message_path, ending, runner.session_id)
    log.info("exiting with code %d: %s", ending.exit_code, ending.reason)
    return ending


async def _run_session(runner: Runner, settings: Settings, slot: claim.Slot) -> Ending:
    setup = asyncio.create_task(runner.setup(settings.config), name="setup")
    stopped = asyncio.create_task(runner.ending(), name="ending")
    await asyncio.wait([setup, stopped], return_when=asyncio.FIRST_COMPLETED)
    if setup.done() and (error := setup.exception()) is not None:
        stopped.cancel()
        log.error("setup failed", exc_info=error)
        return Ending(Reason.SETUP_FAILED, "".join(traceback.format_exception_only(error)).strip())
    if not setup.done():  # stopped while setting up; sync setup code cannot be interrupted
        setup.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await setup
        return await stopped
    safety_net = asyncio.create_task(_safety_net(runner, settings, slot), name="safety-net")
    try:
        ending = await stopped
        await runner.shutdown(settings.stop_grace)
    finally:
        safety_net.cancel()
    return ending


async def _safety_net(runner: Runner, settings: Settings, slot: claim.Slot) -> None:
    # An unclaimed pool worker too: the operator's looks at it are keepalives, so one that no
    # operator looks at (uninstalled, or down) gives its GPU back like any forgotten session.
    await exit_when_forgotten(runner, settings.idle_grace, slot.claimed)


async def exit_when_forgotten(runner: Runner, grace: float, claimed: asyncio.Event | None = None) -> None:
    """The operator culls idle sessions; this covers an operator that is down or lost, so
    that a GPU is never held forever: the worker ends when idle past its session timeout plus
    ``grace``. While ``claimed`` is unset (a pool worker) the timeout is its App's default, and
    a claim restarts the wait with the session's."""
    while True:
        unclaimed = claimed if claimed is not None and not claimed.is_set() else None
        window = runner.session_timeout + grace
        # The deadline moves with every call, so no single event marks it: look again when due.
        left = window - runner.idle_seconds()
        if left <= 0:
            break
        if unclaimed is not None:
            with suppress(TimeoutError):
                await asyncio.wait_for(unclaimed.wait(), left)
        else:
            await asyncio.sleep(left)
    if unclaimed is not None:
        message = f"an unclaimed pool worker the operator has not looked at for more than {window:g}s"
    else:
        message = f"idle for more than {window:g}s (session timeout plus grace)"
    runner.stop(Reason.IDLE_TIMEOUT, message)


def _addresses(web_runner: web.AppRunner) -> list[str]:
    return [f"http://{host}:{port}" for host, port, *_ in (web_runner.addresses or [])]
