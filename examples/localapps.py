"""The example Apps, for the tests and the bench: examples/<folder>/app.yaml as it is (the kubelet
node, which runs the folder's image), or with ``PYTHONPATH`` pointed at the folder (the process
node; the image's is /app): the same as the README's ``sed ... | kubectl apply -f -``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).parent
FOLDERS = ("data", "model", "chat", "browser")


def example_app(
    folder: str, name: str | None = None, env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """The App of ``folder`` as its app.yaml says (its image: the folder's Dockerfile's);
    ``name``, extra ``env`` and ``spec`` fields replace the manifest's."""
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / folder / "app.yaml").read_text())
    body["spec"]["env"] += [{"name": k, "value": v} for k, v in (env or {}).items()]
    body["spec"].update(spec)
    if name:
        body["metadata"]["name"] = name
    return body


def local_app(
    folder: str, name: str | None = None, env: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """The App of ``folder`` for the process node: :func:`example_app` with the module read
    from the folder itself."""
    body = example_app(folder, name, env, **spec)
    for var in body["spec"]["env"]:
        if var["name"] == "PYTHONPATH":
            var["value"] = str(EXAMPLES / folder)
    return body
