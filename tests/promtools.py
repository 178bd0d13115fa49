"""Prometheus' own tools for the tests: Debian's `prometheus` package (`make prometheus-deps`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from .unit.test_chart import CHART, helm


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


def render(**values: Any) -> list[dict[str, Any]]:
    """`helm template` (release "ks") with ``metrics.<key>`` values, typed (``--set-json``:
    plain ``--set`` would make 0.05 a string)."""
    sets = [a for k, v in values.items() for a in ("--set-json", f"metrics.{k}={json.dumps(v)}")]
    out = helm("template", "ks", str(CHART), "--namespace", "ks-system", "--set", "image.tag=0.1.0", *sets)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def rule_groups(**values: Any) -> dict[str, Any]:
    """The chart's PrometheusRule spec as a plain Prometheus rules file; ``values`` under
    ``metrics.prometheusRule``."""
    docs = render(prometheusRule={"enabled": True, **values})
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    spec: dict[str, Any] = rule["spec"]
    return spec


def dashboard_targets() -> list[dict[str, Any]]:
    dashboard = json.loads((CHART / "files" / "grafana" / "kube-sessions.json").read_text())
    return [t for p in dashboard["panels"] for t in p["targets"]]


def grafana_query(expr: str) -> str:
    """A panel's query as Prometheus gets it from Grafana (variables filled in)."""
    return expr.replace("$__rate_interval", "1m").replace("$gpu_hour_price", "2.5")
