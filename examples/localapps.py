"""The example Apps for the process node: examples/<folder>/app.yaml with ``PYTHONPATH`` pointed at
the folder (the image's is /app). The same as the README's ``sed ... | kubectl apply -f -``, for
the tests and the bench."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).parent
FOLDERS = ("data", "model", "chat", "browser")


def local_app(
    folder: str, name: str | None = None, env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """The App of ``folder`` for the process node; ``name``, extra ``env`` and ``spec`` fields
    replace the manifest's."""
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / folder / "app.yaml").read_text())
    for var in body["spec"]["env"]:
        if var["name"] == "PYTHONPATH":
            var["value"] = str(EXAMPLES / folder)
    body["spec"]["env"] += [{"name": k, "value": v} for k, v in (env or {}).items()]
    body["spec"].update(spec)
    if name:
        body["metadata"]["name"] = name
    return body
