"""GPU telemetry through NVML (nvidia-ml-py), sampled on a thread off the event loop.

Without a driver (no GPU, or a CPU-only node) the worker runs normally and reports
``{"available": false, "reason": ...}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pynvml  # type: ignore[import-untyped]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    uuid: str
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    utilization_percent: float | None
    temperature_c: float | None
    power_watts: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid,
            "memoryUsedBytes": self.memory_used_bytes,
            "memoryTotalBytes": self.memory_total_bytes,
            "utilizationPercent": self.utilization_percent,
            "temperatureC": self.temperature_c,
            "powerWatts": self.power_watts,
        }


@dataclass(frozen=True)
class Snapshot:
    available: bool
    reason: str | None = None
    devices: tuple[Device, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"available": self.available, "devices": [d.to_json() for d in self.devices]}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def _optional(read: Callable[..., T], *args: Any) -> T | None:
    """One reading a device may not support (power on some boards, utilisation under MIG)."""
    try:
        return read(*args)
    except pynvml.NVMLError:
        return None


def _text(value: str | bytes) -> str:
    # Older NVML bindings return bytes.
    return value.decode() if isinstance(value, bytes) else value


def sample() -> Snapshot:
    """Read every visible device once. Blocking: call it from a thread."""
    try:
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as exc:
        return Snapshot(False, f"NVML device count failed: {exc}")
    devices = []
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name, uuid = _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle))
        except pynvml.NVMLError as exc:
            log.warning("GPU %d unreadable: %s", index, exc)
            continue
        memory = _optional(pynvml.nvmlDeviceGetMemoryInfo, handle)
        utilization = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
        temperature = _optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
        milliwatts = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
        devices.append(
            Device(
                index=index,
                name=name,
                uuid=uuid,
                memory_used_bytes=None if memory is None else int(memory.used),
                memory_total_bytes=None if memory is None else int(memory.total),
                utilization_percent=None if utilization is None else float(utilization.gpu),
                temperature_c=None if temperature is None else float(temperature),
                power_watts=None if milliwatts is None else milliwatts / 1000.0,
            )
        )
    return Snapshot(True, devices=tuple(devices))


class GpuMonitor:
    """Keeps the latest :class:`Snapshot`; ``run()`` samples every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.snapshot = Snapshot(False, "not sampled yet")
        self._initialised = False

    async def run(self) -> None:
        try:
            await asyncio.to_thread(pynvml.nvmlInit)
        except pynvml.NVMLError as exc:
            self.snapshot = Snapshot(False, f"NVML unavailable: {exc}")
            log.info("no GPU telemetry: %s", self.snapshot.reason)
            return
        self._initialised = True
        while True:
            self.snapshot = await asyncio.to_thread(sample)
            await asyncio.sleep(self.interval)

    def close(self) -> None:
        if self._initialised:
            self._initialised = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as exc:
                log.warning("NVML shutdown failed: %s", exc)
