"""The API server itself refuses bad Session and App manifests (CRD schema + CEL)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import Cluster
from ..validation_cases import BAD, GOOD, IMMUTABLE, Case, examples, mutated, session

pytestmark = pytest.mark.cluster
REPO = Path(__file__).parent.parent.parent


def kubectl(kube: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return kube.run_kubectl(*args, stdin=stdin)


@pytest.mark.parametrize("case", examples() + GOOD, ids=lambda c: c.id)
def test_valid_manifests_are_accepted(kube: Cluster, crds: None, namespace: str, case: Case) -> None:
    out = kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(case.manifest))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_bad_manifests_are_refused_naming_the_field(
    kube: Cluster, crds: None, namespace: str, case: Case
) -> None:
    out = kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(case.manifest))
    assert out.returncode != 0, f"accepted: {out.stdout}"
    assert case.field and case.field in out.stderr, out.stderr
    listed = kubectl(
        kube, "get", case.manifest["kind"].lower() + "s.kubesessions.io", "-n", namespace, "-o", "json"
    )
    assert json.loads(listed.stdout)["items"] == [], "a refused manifest must change nothing"


@pytest.mark.parametrize(("case_id", "old", "new", "message"), IMMUTABLE, ids=[c[0] for c in IMMUTABLE])
def test_app_and_template_are_immutable(
    kube: Cluster, crds: None, namespace: str, case_id: str, old: dict, new: dict, message: str
) -> None:
    created = kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(session(old)))
    assert created.returncode == 0, created.stderr
    changed = kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(mutated(old, new)))
    assert changed.returncode != 0
    assert message in changed.stderr


def test_mutable_fields_can_change(kube: Cluster, crds: None, namespace: str) -> None:
    spec = {"app": "x", "sessionTimeout": 60}
    assert (
        kubectl(kube, "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(session(spec))).returncode
        == 0
    )
    longer = kubectl(
        kube,
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(session({**spec, "sessionTimeout": 120})),
    )
    assert longer.returncode == 0, longer.stderr


def test_kubectl_get_sessions_columns_and_short_name(kube: Cluster, crds: None, namespace: str) -> None:
    assert (
        kubectl(kube, "apply", "-n", namespace, "-f", str(REPO / "examples" / "session-cpu.yaml")).returncode
        == 0
    )
    out = kubectl(kube, "get", "sess", "-n", namespace)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "REASON", "APP", "GPUS", "TIMEOUT", "IDLE-SINCE", "AGE"]
    assert out.stdout.splitlines()[1].split()[:2] == ["counter-cpu", "counter"]
