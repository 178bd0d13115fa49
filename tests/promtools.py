"""Prometheus' own tools for the tests: Debian's `prometheus` package (`make prometheus-deps`)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; the test fails, saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run `make prometheus-deps` (Debian's prometheus package)")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def check_metrics(text: str) -> None:
    """The exposition format and Prometheus' naming rules (units, _total), as promtool lints them."""
    result = promtool("check", "metrics", stdin=text)
    assert result.returncode == 0, f"promtool check metrics: {result.stdout}{result.stderr}\n---\n{text}"
