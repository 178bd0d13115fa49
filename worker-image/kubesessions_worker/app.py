"""The user's app: loaded from ``module:Class``; ``setup``/``run``/``close`` (and the optional
``suspend``/``resume``) sync or async.

Sync code runs on one dedicated thread, never on the event loop: the server keeps
answering probes while ``setup`` loads a model, and libraries that insist on being used
from the thread that created their objects (browser drivers, some GPU contexts) work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import importlib
import inspect
import os
import queue
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .session import FUNCTION_MARK

T = TypeVar("T")


class AppError(Exception):
    """The app cannot be loaded or does not follow the contract."""


@dataclass(frozen=True)
class Value:
    """``run`` returned one value."""

    value: Any


@dataclass(frozen=True)
class Stream:
    """``run`` yields values; iterate ``items`` (it closes the generator when left early)."""

    items: AsyncGenerator[Any, Any]


class AppThread:
    """One daemon thread that runs every piece of the app's sync code, in order.

    A daemon thread (unlike ``ThreadPoolExecutor``'s) cannot keep the process alive: a call
    stuck past its timeout must not stop the worker from exiting and freeing the GPU.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="app", daemon=True).start()

    def _work(self) -> None:
        while True:
            self._jobs.get()()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the app thread, its outcome back on the loop. Cancelled while queued,
        it never runs; cancelled while running, it runs to its end (:meth:`settled` waits for it)."""
        answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        done = self.submit(fn, *args, answer=answer)
        try:
            return await answer
        except asyncio.CancelledError:
            done.cancel()  # fails, harmlessly, once the job has started
            raise

    def submit(
        self,
        fn: Callable[..., T],
        *args: Any,
        answer: asyncio.Future[T] | None = None,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)``; ``answer``: also settle this loop future with its outcome, from
        the thread: one call into the loop, where ``asyncio.wrap_future`` chains callbacks on
        both futures (the hand-off's cost: docs/performance.md, "Worker `/run`")."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()
        context = contextvars.copy_context()  # end_session() must see the current call

        def job() -> None:
            if not done.set_running_or_notify_cancel():
                return
            try:
                result = context.run(fn, *args)
            except BaseException as exc:  # handed to the awaiting coroutine, never lost
                if isinstance(exc, StopIteration):
                    # A future refuses it (it would end the coroutine awaiting it): the call
                    # would hang until its timeout. Named as Python names one out of a generator.
                    stopped, exc = exc, RuntimeError("the app raised StopIteration")
                    exc.__cause__ = stopped
                done.set_exception(exc)
                outcome: tuple[Any, BaseException | None] = (None, exc)
            else:
                done.set_result(result)
                outcome = (result, None)
            if answer is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: no one awaits it now
                    answer.get_loop().call_soon_threadsafe(_settle, answer, *outcome)

        self._jobs.put(job)
        return done

    async def settled(self) -> None:
        """Wait until every job handed over so far has finished, even those whose callers gave
        up: a job of nothing, queued behind them all, comes back."""
        await self.run(_nothing)


class AppHost:
    """Loads the app class and calls it; knows nothing about HTTP or queues."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.thread = AppThread()
        self._instance: Any = None
        self._functions: list[str] | None = None  # known once the class is loaded; asked per call

    @property
    def instance(self) -> Any:
        if self._instance is None:
            raise AppError("the app is not loaded yet")
        return self._instance

    async def setup(self, config: Mapping[str, Any]) -> None:
        """Import and instantiate the class (on the app thread: imports can take seconds), then
        call ``setup(config)``, or ``setup()`` when it takes no argument."""
        self._instance = await self.thread.run(_instantiate, self.spec)
        cls = type(self._instance)
        marked = [n for n in dir(cls) if getattr(getattr(cls, n, None), FUNCTION_MARK, False)]
        self._functions = sorted({"run", *marked})
        setup = getattr(self._instance, "setup", None)
        if setup is None:
            return
        args = (dict(config),) if _takes_argument(setup) else ()
        await self._call(setup, *args)

    def functions(self) -> list[str] | None:
        """The functions callers may name: ``run`` and the methods marked ``@function``
        (None until the app is loaded)."""
        return self._functions

    async def run(self, payload: Any, function: str = "run") -> Value | Stream:
        fn = getattr(self.instance, function)
        if inspect.isasyncgenfunction(fn):
            return Stream(fn(payload))
        result = await self._call(fn, payload)
        if isinstance(result, AsyncGenerator):
            return Stream(result)
        if isinstance(result, Generator):
            return Stream(self._iterate_on_thread(result))
        return Value(result)

    def suspendable(self) -> bool:
        """The app defines both ``suspend(dir)`` and ``resume(dir)`` (False until it is loaded)."""
        return all(callable(getattr(self._instance, name, None)) for name in ("suspend", "resume"))

    def version(self) -> str | None:
        """The app's ``version`` attribute, else its module's ``__version__``: kept with its state."""
        found = getattr(self.instance, "version", None) or getattr(
            sys.modules.get(type(self.instance).__module__), "__version__", None
        )
        return str(found) if found is not None else None

    async def suspend(self, directory: Path) -> None:
        await self._call(self.instance.suspend, directory)

    async def resume(self, directory: Path) -> None:
        await self._call(self.instance.resume, directory)

    async def close(self) -> None:
        close = getattr(self._instance, "close", None)
        if close is not None:
            await self._call(close)

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        return await self.thread.run(fn, *args)

    async def _iterate_on_thread(self, generator: Generator[Any, Any, Any]) -> AsyncGenerator[Any, Any]:
        finished = False
        try:
            while True:
                more, item = await self.thread.run(_step, generator)
                if not more:
                    finished = True
                    return
                yield item
        finally:
            if not finished:
                # Runs on the app thread after any step still in progress (a timed-out one),
                # so still before the next call's code.
                self.thread.submit(generator.close)


def _nothing() -> None:
    pass


def _settle(answer: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if answer.cancelled():  # its caller gave up (a call timeout) while the job ran
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        answer.set_result(result)


_DONE = object()


def _step(generator: Generator[Any, Any, Any]) -> tuple[bool, Any]:
    item = next(generator, _DONE)
    return (item is not _DONE, item)


def _instantiate(spec: str) -> Any:
    module_name, _, class_name = spec.partition(":")
    # Like `python -m`: an app module in the working directory is found without packaging.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise AppError(f"module {module_name!r} has no attribute {class_name!r}")
    if not callable(getattr(cls, "run", None)):
        raise AppError(f"{spec} has no run(input) method")
    return cls()


def _takes_argument(fn: Callable[..., Any]) -> bool:
    try:
        return bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):  # builtins without a signature: follow the contract
        return True
