"""Tiny fixture apps: each shows one behaviour of the runtime, nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from kubesessions_worker import end_session


class Echo:
    def run(self, input: Any) -> Any:
        return input


class FailingSetup:
    def setup(self, config: dict[str, Any]) -> None:
        raise RuntimeError("no model here")

    def run(self, input: Any) -> Any:
        raise AssertionError("run must not be called when setup failed")


class Boom:
    """Raises for the input "boom", lets a StopIteration escape for "empty" (``next`` of an
    empty iterator, as app code may), echoes anything else."""

    def run(self, input: Any) -> Any:
        if input == "boom":
            raise ValueError("cannot digest boom")
        if input == "empty":
            return next(iter([]))
        return input


class Unserialisable:
    def run(self, input: Any) -> Any:
        return object()


class Gate:
    """Async: every call waits for ``release`` unless its input is "pass"; records what ran."""

    async def setup(self, config: dict[str, Any]) -> None:
        self.release = asyncio.Event()
        self.log: list[tuple[str, Any]] = []
        self.active = 0
        self.max_active = 0

    async def run(self, input: Any) -> Any:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        self.log.append(("start", input))
        for _ in range(3):  # give an overlapping call every chance to interleave
            await asyncio.sleep(0)
        if input != "pass":
            await self.release.wait()
        self.log.append(("end", input))
        self.active -= 1
        return input


class ThreadGate:
    """Sync: blocks its thread until ``release`` is set (a call that ignores its timeout)."""

    def setup(self) -> None:  # no config parameter: the runtime must cope
        self.release = threading.Event()
        self.log: list[tuple[str, Any]] = []

    def run(self, input: Any) -> Any:
        self.log.append(("start", input))
        if input != "pass":
            assert self.release.wait(timeout=30), "the test never released the call"
        self.log.append(("end", input))
        return input


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"the test never created {path}"
        time.sleep(0.01)


class SlowSetup:
    """``setup`` lasts until the file config["release"] appears."""

    def setup(self, config: dict[str, Any]) -> None:
        _wait_for_file(Path(config["release"]))

    def run(self, input: Any) -> Any:
        return input


class Tokens:
    """Sync generator: yields the items of a list; the item "boom" raises mid-stream."""

    def run(self, input: list[str]) -> Iterator[str]:
        for item in input:
            if item == "boom":
                raise ValueError("broke mid-stream")
            yield item


class AsyncTokens:
    async def run(self, input: list[str]) -> AsyncIterator[str]:
        for item in input:
            await asyncio.sleep(0)
            yield item


class Ender:
    """Ends its session on the input "bye"; ``close()`` leaves a marker file (config["marker"])."""

    def setup(self, config: dict[str, Any]) -> None:
        self.marker = Path(config["marker"]) if "marker" in config else None
        self.closed = False

    def run(self, input: Any) -> Any:
        if input == "bye":
            end_session()
        return input

    def close(self) -> None:
        self.closed = True
        if self.marker:
            self.marker.write_text("closed")


class Lingering(Ender):
    """A call that runs until a file appears ({"release": path}), for the SIGTERM path."""

    def run(self, input: Any) -> Any:
        _wait_for_file(Path(input["release"]))
        return "finished"


class Counter:
    """Sync and suspendable: a count that survives suspend -> resume. ``gate`` set: suspend,
    resume and a call with input 0 wait for it."""

    version = "2.1"

    def setup(self) -> None:
        self.count = 0
        self.resumed_from: list[str] = []
        self.gate: threading.Event | None = None

    def run(self, input: Any) -> Any:
        if input == 0 and self.gate is not None:  # a call that holds until the test says
            assert self.gate.wait(timeout=30), "the test never released the call"
        self.count += int(input)
        return self.count

    def suspend(self, dir: Path) -> None:
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "the test never released the suspend"
        (dir / "count.txt").write_text(str(self.count))
        (dir / "nested").mkdir()
        (dir / "nested" / "blob.bin").write_bytes(bytes(range(256)) * 4)

    def resume(self, dir: Path) -> None:
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "the test never released the resume"
        assert (dir / "nested" / "blob.bin").read_bytes() == bytes(range(256)) * 4
        self.count = int((dir / "count.txt").read_text())
        self.resumed_from.append(str(dir))


class AsyncNotes:
    """Async and suspendable: notes kept as JSON."""

    async def setup(self, config: dict[str, Any]) -> None:
        self.notes: list[str] = []
        self.fail: str | None = None  # "suspend" or "resume": that step raises

    async def run(self, input: Any) -> Any:
        self.notes.append(str(input))
        return list(self.notes)

    async def suspend(self, dir: Path) -> None:
        if self.fail == "suspend":
            raise OSError("disk full")
        (dir / "notes.json").write_text(json.dumps(self.notes))

    async def resume(self, dir: Path) -> None:
        if self.fail == "resume":
            raise ValueError("notes from another world")
        self.notes = json.loads((dir / "notes.json").read_text())


class Hoarder(AsyncNotes):
    """Suspends ``size`` bytes (its input sets the size)."""

    async def run(self, input: Any) -> Any:
        self.size = int(input)
        return self.size

    async def suspend(self, dir: Path) -> None:
        (dir / "big.bin").write_bytes(os.urandom(self.size))


class Linker(AsyncNotes):
    """Leaves a symbolic link in its state: refused (it could point anywhere on resume)."""

    async def suspend(self, dir: Path) -> None:
        (dir / "link").symlink_to("/etc/passwd")
