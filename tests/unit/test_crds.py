from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubesessions.api import crds

pytestmark = pytest.mark.unit
REPO = Path(__file__).parent.parent.parent


def test_committed_crds_match_the_models() -> None:
    diffs = crds.check(REPO / "crds")
    assert diffs == [], "crds/ drifted from the models; run `kubesessions crds --write`:\n" + "".join(diffs)


def test_check_command_fails_with_a_diff_on_drift(tmp_path: Path) -> None:
    crds.write(tmp_path)
    target = tmp_path / "sessions.kubesessions.io.yaml"
    target.write_text(target.read_text().replace("maximum: 3600", "maximum: 7200"))
    proc = subprocess.run(
        [sys.executable, "-m", "kubesessions.cli.commands", "crds", "--check", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "-                maximum: 7200" in proc.stdout or "maximum: 7200" in proc.stdout
    assert "kubesessions crds --write" in proc.stderr


def _walk(schema: dict[str, Any], path: str = "") -> list[str]:
    """Places where a schema is not structural (Kubernetes refuses these)."""
    bad = []
    for key in ("$ref", "anyOf", "oneOf", "allOf", "title", "$defs"):
        if key in schema:
            bad.append(f"{path}: {key}")
    if "additionalProperties" in schema and "properties" in schema:
        bad.append(f"{path}: properties with additionalProperties")
    for name, sub in schema.get("properties", {}).items():
        bad += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        bad += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        bad += _walk(schema["additionalProperties"], f"{path}{{}}")
    return bad


@pytest.mark.parametrize("crd", [crds.session_crd(), crds.app_crd()], ids=["session", "app"])
def test_schemas_are_structural(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    assert schema["properties"]["spec"]["properties"][
        "image" if crd["spec"]["names"]["kind"] == "App" else "app"
    ]


def test_session_printer_columns() -> None:
    printed = crds.session_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    columns = {c["name"]: c for c in printed}
    assert list(columns) == [
        "Phase",
        "Reason",
        "App",
        "GPUs",
        "Timeout",
        "Idle-since",
        "Age",
        "GPU-seconds",
        "Busy-%",
        "Kept-until",
    ]
    wide = [c["name"] for c in printed if c.get("priority") == 1]  # -o wide
    assert wide == ["GPU-seconds", "Busy-%", "Kept-until"]
    # A suspended session shows in the Phase column, and -o wide says until when it is kept.
    assert {"Suspended", "Resuming"} <= set(
        crds.session_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"][
            "properties"
        ]["phase"]["enum"]
    )
    assert columns["Kept-until"]["jsonPath"] == ".status.suspension.expiresAt"
    assert columns["Reason"]["jsonPath"] == ".status.reason"
    # The idle column says how fresh it is, and stops with the session (a field only a live
    # session has).
    idle = columns["Idle-since"]
    assert idle["jsonPath"] == ".status.idleSince"
    assert "lazily" in idle["description"]
    assert "MIG" in columns["GPUs"]["description"]
    assert crds.session_crd()["spec"]["names"]["shortNames"] == ["sess"]
