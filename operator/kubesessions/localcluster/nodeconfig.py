"""Settings of the process node, chosen at `localcluster up` and kept in state.json."""

from __future__ import annotations

from dataclasses import dataclass, field

# The node's own address: the API server reaches it here, and pods see it as hostIP.
HOST_IP = "127.0.0.1"

# The project's worker image runs as the worker's console script on the process node.
WORKER_IMAGE = "ghcr.io/kube-sessions/kube-sessions-worker"
# The operator and gateway image (the Helm chart's `image`) runs the `kubesessions` command.
OPERATOR_IMAGE = "ghcr.io/kube-sessions/kube-sessions"
# The example apps' images (examples/<name>/Dockerfile, FROM the worker image; `make images`):
# on the process node they too run the worker, with the app's folder on PYTHONPATH.
EXAMPLE_IMAGES = {
    name: f"ghcr.io/kube-sessions/kube-sessions-example-{name}"
    for name in ("data", "model", "chat", "browser")
}
DEFAULT_IMAGE_MAP = {
    WORKER_IMAGE: "kubesessions-worker",
    **dict.fromkeys(EXAMPLE_IMAGES.values(), "kubesessions-worker"),
    OPERATOR_IMAGE: "kubesessions",
    "python": "python3",
}


NODE_KINDS = ("process", "kubelet")


@dataclass
class NodeConfig:
    # process: pods run as local processes; kubelet: a real kubelet with containerd and runc.
    kind: str = "process"
    name: str = "local-0"
    cpu: str = "64"
    memory: str = "256Gi"
    pods: int = 250
    gpus: int = 2
    gpu_product: str = "NVIDIA-A100-SXM4-80GB"
    gpu_memory_mib: int = 81920
    # GPU nodes often carry this taint so that only pods asking for GPUs land there.
    gpu_taint: bool = False
    image_map: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_IMAGE_MAP))


def image_repository(image: str) -> str:
    """``repo/name:tag`` or ``repo/name@sha256:...`` -> ``repo/name`` (a port stays)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        last[-1] = last[-1].split(":", 1)[0]
    repo = "/".join(last)
    for prefix in ("docker.io/library/", "docker.io/"):
        if repo.startswith(prefix):
            return repo[len(prefix) :]
    return repo


def command_for_image(image: str, image_map: dict[str, str]) -> str | None:
    """The local command an image stands for on the process node, if it has one."""
    return image_map.get(image_repository(image))
