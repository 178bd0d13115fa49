"""The chart's PrometheusRule and dashboard, checked by Prometheus' own promtool (rendered by real helm)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesessions.control.accounting import Accounting
from kubesessions.control.poolmetrics import PoolMetrics

from ..promtools import dashboard_targets, grafana_query, promtool, render, rule_groups
from .test_chart import CHART, helm

pytestmark = pytest.mark.unit
CASES = Path(__file__).parent / "prometheus" / "alerts_test.yaml"
ALERTS = {
    "KubeSessionsOperatorDown",
    "KubeSessionsOperatorNotReconciling",
    "KubeSessionsStuckStarting",
    "KubeSessionsWorkersUnreachable",
    "KubeSessionsIdleGpuShareHigh",
    "KubeSessionsGateway5xx",
}


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    result = promtool("check", "rules", str(tmp_path / "rules.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_each_alert_has_a_case_that_fires_and_one_that_does_not(tmp_path: Path) -> None:
    cases = yaml.safe_load(CASES.read_text())
    fired, quiet = set(), set()
    for case in cases["tests"]:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fired == quiet == ALERTS
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}
    assert alerts == ALERTS


def test_the_alert_cases_pass_promtool_test_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    shutil.copy(CASES, tmp_path / CASES.name)
    result = promtool("test", "rules", str(tmp_path / CASES.name))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_lower_threshold_makes_the_quiet_gateway_case_fire(tmp_path: Path) -> None:
    """The values reach the expressions: at a 0.5 % threshold, 1 % of 5xx fires."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(gateway5xxShare=0.005)))
    shutil.copy(CASES, tmp_path / CASES.name)
    result = promtool("test", "rules", str(tmp_path / CASES.name))
    assert result.returncode != 0
    assert "one percent 5xx does not fire" in result.stdout + result.stderr


def test_rules_and_dashboard_are_off_by_default() -> None:
    kinds = {d["kind"] for d in render()}
    assert "PrometheusRule" not in kinds
    assert "ConfigMap" not in kinds
    assert "ServiceMonitor" not in kinds


def test_dashboard_configmap_carries_the_sidecar_label_and_the_price() -> None:
    docs = render(dashboards={"enabled": True, "gpuHourPrice": 3.2})
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["kube-sessions.json"])
    price = next(v for v in dashboard["templating"]["list"] if v["name"] == "gpu_hour_price")
    assert price["query"] == "3.2"
    assert dashboard["uid"] == "kube-sessions"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool parses each panel's query (as a recording rule), Grafana's variables filled in."""
    rules = [
        {"record": f"panel_{i}_{t['refId']}", "expr": grafana_query(t["expr"])}
        for i, t in enumerate(dashboard_targets())
    ]
    (tmp_path / "panels.yaml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = promtool("check", "rules", str(tmp_path / "panels.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"prometheusRule": {"idleGpuShare": 2}}, "/metrics/prometheusRule/idleGpuShare"),
        ({"prometheusRule": {"for": "five minutes"}}, "/metrics/prometheusRule/for"),
        ({"dashboards": {"gpuHourPrice": -1}}, "/metrics/dashboards/gpuHourPrice"),
        ({"dashboard": {"enabled": True}}, "additional properties"),
        ({"serviceMonitor": {"interval": "often"}}, "/metrics/serviceMonitor/interval"),
        ({"serviceMonitor": {"enable": True}}, "additional properties"),
        ({"service": {"enabled": "yes"}}, "/metrics/service/enabled"),
    ],
)
def test_schema_refuses_bad_metrics_values(value: dict[str, Any], field: str) -> None:
    out = helm(
        "template", "ks", str(CHART), "--set", "image.tag=0.1.0", "--set-json", f"metrics={json.dumps(value)}"
    )
    assert out.returncode != 0
    assert field in out.stderr, out.stderr


def test_the_dashboard_shows_every_warm_pool_series_the_operator_exports() -> None:
    """Each pool family (size, ready, claims, claim latency, pool GPU-seconds) has a panel, the
    upkeep's API writes aside (the operator panel's business)."""
    exported = [*PoolMetrics().lines(), *Accounting().render()]
    families = {line.split()[2] for line in exported if line.startswith("# TYPE kubesessions_pool_")} - {
        "kubesessions_pool_upkeep_writes_total"
    }
    assert len(families) == 5, families
    queries = " ".join(t["expr"] for t in dashboard_targets())
    assert {f for f in families if f not in queries} == set()
