"""Schemathesis against the gateway, with a real token: the OpenAPI document says what it accepts.

Every check schemathesis has, bounded in examples so the run stays short; the document's links
from POST /v1/sessions lead the stateful phase to the operations that take a session id.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from ..conftest import REPO, Cluster, OperatorProcess
from .conftest import GROUP, GatewayProcess, service_account_token

pytestmark = pytest.mark.cluster


@pytest.fixture
def gateway(
    kube: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path
) -> Iterator[GatewayProcess]:
    """The gateway with one App, echo: whatever input the fuzzer sends, echo answers it."""
    (echo,) = [
        a
        for a in yaml.safe_load_all((REPO / "examples" / "apps.yaml").read_text())
        if a["metadata"]["name"] == "echo"
    ]
    client.CustomObjectsApi(kube.api).create_namespaced_custom_object(*GROUP, namespace, "apps", echo)
    gw = GatewayProcess(kube, namespace, tmp_path).start()
    yield gw
    gw.stop()


def test_schemathesis_finds_nothing(
    gateway: GatewayProcess, kube: Cluster, namespace: str, tmp_path: Path
) -> None:
    token = service_account_token(kube, namespace, "fuzzer", allowed=True)
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            f"--config-file={Path(__file__).parent / 'schemathesis.toml'}",
            "run",
            f"{gateway.url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            # A closed session stays readable (GET answers it, phase Closed) while its tombstone
            # lasts, so late callers learn why: by design, not a use after free.
            "--exclude-checks",
            "use_after_free",
            # The coverage phase (every boundary value) passes as well, but starts a session for each
            # positive run request: a minute more here. Examples, fuzzing and the stateful links
            # stay well under a minute.
            "--phases",
            "examples,fuzzing,stateful",
            "--max-examples",
            "6",
            "--seed",
            "1",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            "--output-sanitize",
            "false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(run.stdout[-20000:])
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
