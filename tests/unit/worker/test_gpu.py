"""GPU telemetry: NVML faked (the shipped code path reads it), and NVML absent."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest

from kubesessions_worker import metrics
from kubesessions_worker.gpu import GpuMonitor, Snapshot

from .harness import runner_for, until

pytestmark = pytest.mark.unit


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Two A100s; the second cannot report power (as some boards cannot)."""
    calls = {"init": 0, "shutdown": 0, "samples": 0}

    def count() -> int:
        calls["samples"] += 1
        return 2

    def power(handle: int) -> int:
        if handle == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 123_456  # milliwatts

    fakes: dict[str, Any] = {
        "nvmlInit": lambda: calls.__setitem__("init", calls["init"] + 1),
        "nvmlShutdown": lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1),
        "nvmlDeviceGetCount": count,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        # Older bindings return bytes: the second device does.
        "nvmlDeviceGetName": lambda h: "NVIDIA A100-SXM4-80GB" if h == 0 else b"NVIDIA A100-SXM4-80GB",
        "nvmlDeviceGetUUID": lambda h: f"GPU-{h:08d}",
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30, free=0),
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=40 + h, memory=0),
        "nvmlDeviceGetTemperature": lambda h, sensor: 50 + h,
        "nvmlDeviceGetPowerUsage": power,
    }
    for name, fake in fakes.items():
        monkeypatch.setattr(pynvml, name, fake)
    return calls


async def test_devices_are_sampled_periodically_when_nvml_is_present(fake_nvml: dict[str, int]) -> None:
    monitor = GpuMonitor(interval=0.01)
    task = asyncio.create_task(monitor.run())
    try:
        await until(lambda: fake_nvml["samples"] >= 3, "three samples")
    finally:
        task.cancel()
    snapshot = monitor.snapshot.to_json()
    assert snapshot == {
        "available": True,
        "devices": [
            {
                "index": 0,
                "name": "NVIDIA A100-SXM4-80GB",
                "uuid": "GPU-00000000",
                "memoryUsedBytes": 2**30,
                "memoryTotalBytes": 80 * 2**30,
                "utilizationPercent": 40.0,
                "temperatureC": 50.0,
                "powerWatts": 123.456,
            },
            {
                "index": 1,
                "name": "NVIDIA A100-SXM4-80GB",
                "uuid": "GPU-00000001",
                "memoryUsedBytes": 2 * 2**30,
                "memoryTotalBytes": 80 * 2**30,
                "utilizationPercent": 41.0,
                "temperatureC": 51.0,
                "powerWatts": None,
            },
        ],
    }
    monitor.close()
    assert fake_nvml == {"init": 1, "shutdown": 1, "samples": fake_nvml["samples"]}


async def test_gpu_series_appear_in_metrics(fake_nvml: dict[str, int]) -> None:
    from kubesessions_worker.gpu import sample

    async with runner_for("Echo") as runner:
        text = metrics.render(runner.stats, runner.status(), sample())
    assert "kubesessions_worker_gpu_available 1" in text
    assert 'kubesessions_worker_gpu_utilization_percent{gpu="1",uuid="GPU-00000001"} 41.0' in text
    assert f'kubesessions_worker_gpu_memory_total_bytes{{gpu="0",uuid="GPU-00000000"}} {80 * 2**30}' in text


async def test_without_nvml_the_worker_reports_why(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_driver() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    monitor = GpuMonitor(interval=0.01)
    await asyncio.wait_for(monitor.run(), 5)  # returns: there is nothing to sample
    assert monitor.snapshot.available is False
    assert monitor.snapshot.to_json() == {
        "available": False,
        "devices": [],
        "reason": "NVML unavailable: NVML Shared Library Not Found",
    }
    monitor.close()  # nothing to shut down, no error


def test_a_failing_device_count_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubesessions_worker.gpu import sample

    def broken() -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", broken)
    snapshot = sample()
    assert snapshot == Snapshot(False, "NVML device count failed: GPU is lost")


async def test_each_visible_gpu_reports_its_busy_and_idle_gpu_seconds(fake_nvml: dict[str, int]) -> None:
    from kubesessions_worker.gpu import sample

    from .harness import FakeClock

    clock = FakeClock()
    async with runner_for("Gate", clock=clock) as runner:
        runner.submit("x")
        await until(lambda: runner.status().in_flight, "the call to start")
        clock.advance(2)
        runner.app.instance.release.set()
        await until(lambda: not runner.status().in_flight, "the call to end")
        clock.advance(3)
        text = metrics.render(runner.stats, runner.status(), sample())
    for gpu, uuid in (("0", "GPU-00000000"), ("1", "GPU-00000001")):
        assert f'kubesessions_worker_gpu_seconds_total{{gpu="{gpu}",uuid="{uuid}",state="busy"}} 2.0' in text
        assert f'kubesessions_worker_gpu_seconds_total{{gpu="{gpu}",uuid="{uuid}",state="idle"}} 3.0' in text
        assert (
            f'kubesessions_worker_gpu_seconds_total{{gpu="{gpu}",uuid="{uuid}",state="starting"}} 0.0' in text
        )
