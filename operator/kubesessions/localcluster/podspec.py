"""Pure helpers: what a container of a pod runs on the process node, and with what env.

They follow the kubelet's rules: ``envFrom`` first and ``env`` over it, ``$(VAR)``
references expanded against what is defined before, ``command`` replacing the image's
entrypoint and ``args`` its default arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from kubesessions.api.names import JSON
from kubesessions.localcluster.nodeconfig import command_for_image


class ContainerConfigError(ValueError):
    """The container cannot be started as configured (kubelet: CreateContainerConfigError)."""


class ImageNotRunnable(ValueError):
    """The image has no command on this node and the container names none (ErrImagePull)."""


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(sub, text)


def field_value(pod: JSON, path: str) -> str:
    """The downward API's ``fieldRef.fieldPath`` of ``pod``."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs", [])),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs", [])),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef.fieldPath {path!r}")


_SUFFIX: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``2Gi``, ``1e3``) as a number."""
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?\d+)?)([a-zA-Z]*)", str(text).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ContainerConfigError(f"not a quantity: {text!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def resource_value(container: JSON, ref: JSON) -> str:
    """``resourceFieldRef``: a limit (or request) divided by the divisor, rounded up."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources", {})
    value = resources.get(kind, {}).get(name)
    if value is None and kind == "limits":
        value = resources.get("requests", {}).get(name)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor", "1"))
    return str(math.ceil(parse_quantity(value) / divisor))


def container_env(
    pod: JSON,
    container: JSON,
    lookup: Callable[[str, str, str], Mapping[str, str] | None],
) -> dict[str, str]:
    """The environment a container's own spec gives it (without the node's base env)."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}

    def source(kind: str, ref: JSON, what: str) -> Mapping[str, str] | None:
        data = lookup(kind, namespace, ref["name"])
        if data is None and not ref.get("optional", False):
            raise ContainerConfigError(f'{kind} "{ref["name"]}" not found ({what})')
        return data

    for item in container.get("envFrom", []):
        for kind, key in (("secret", "secretRef"), ("configmap", "configMapRef")):
            if key in item:
                data = source(kind, item[key], "envFrom") or {}
                env.update({item.get("prefix", "") + k: v for k, v in data.items()})
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        ref = var["valueFrom"]
        if "fieldRef" in ref:
            env[name] = field_value(pod, ref["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in ref:
            env[name] = resource_value(container, ref["resourceFieldRef"])
        else:
            kind, key = (
                ("secret", "secretKeyRef") if "secretKeyRef" in ref else ("configmap", "configMapKeyRef")
            )
            sel = ref[key]
            values = source(kind, sel, f"env {name}")
            if values is None:
                continue
            if sel["key"] not in values:
                if sel.get("optional", False):
                    continue
                raise ContainerConfigError(f'key "{sel["key"]}" not in {kind} "{sel["name"]}" (env {name})')
            env[name] = values[sel["key"]]
    return env


def container_argv(container: JSON, env: Mapping[str, str], image_map: Mapping[str, str]) -> list[str]:
    """What the process node runs for a container: its command, or its image's mapping."""
    args = [expand(a, env) for a in container.get("args", [])]
    if container.get("command"):
        return [expand(c, env) for c in container["command"]] + args
    mapped = command_for_image(container.get("image", ""), dict(image_map))
    if mapped is None:
        known = ", ".join(sorted(image_map)) or "none"
        raise ImageNotRunnable(
            f'image "{container.get("image", "")}" has no local command on the process node '
            f"and the container sets no command (images it can run without one: {known})"
        )
    return mapped.split() + args


def env_references(pod: JSON, cspec: JSON) -> set[tuple[str, str, str]]:
    """The Secrets and ConfigMaps a container's env reads."""
    ns = pod["metadata"]["namespace"]
    refs = set()
    for item in cspec.get("envFrom", []):
        if "secretRef" in item:
            refs.add(("secret", ns, item["secretRef"]["name"]))
        if "configMapRef" in item:
            refs.add(("configmap", ns, item["configMapRef"]["name"]))
    for var in cspec.get("env", []):
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            refs.add(("secret", ns, ref["secretKeyRef"]["name"]))
        if "configMapKeyRef" in ref:
            refs.add(("configmap", ns, ref["configMapKeyRef"]["name"]))
    return refs


# The volume sources the process node provides, each as a directory of the pod's own (it runs
# processes and mounts nothing): emptyDir starts empty, configMap and secret hold their keys as
# files. Both go with the pod's directory when the pod is deleted.
DIRECTORY_VOLUMES = ("emptyDir", "configMap", "secret")
VOLUME_ENV_PREFIX = "KUBESESSIONS_VOLUME_"


@dataclass(frozen=True)
class Mount:
    """One of a container's volumeMounts, with the volume it names."""

    volume: JSON
    source: str  # one of DIRECTORY_VOLUMES
    mount_path: str
    sub_path: str

    @property
    def name(self) -> str:
        return str(self.volume["name"])


def container_mounts(pod: JSON, cspec: JSON) -> list[Mount]:
    """The container's mounts; a volume of a source this node cannot provide fails the container
    (as a kubelet fails one it cannot mount: CreateContainerConfigError) naming it."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    mounts = []
    for mount in cspec.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ContainerConfigError(
                f'volumeMount {mount["mountPath"]}: the pod has no volume "{mount["name"]}"'
            )
        source = next((k for k in volume if k != "name"), "no source")
        if _service_account_volume(volume):
            continue  # the API token: the node gives the process a KUBECONFIG instead
        if source not in DIRECTORY_VOLUMES:
            raise ContainerConfigError(
                f'volume "{volume["name"]}": {source} volumes are not provided by the process node (it '
                f"mounts nothing; it gives emptyDir, configMap and secret volumes as directories): "
                "use the kubelet node"
            )
        mounts.append(Mount(volume, source, mount["mountPath"], mount.get("subPath", "")))
    return mounts


def _service_account_volume(volume: JSON) -> bool:
    """The volume the ServiceAccount admission adds for an API token (`kube-api-access-*`)."""
    sources = (volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in source for source in sources)


def volume_object(mount: Mount) -> tuple[str, str] | None:
    """(kind, name) of the Secret or ConfigMap a mount's volume reads (``lookup``'s terms)."""
    spec = mount.volume[mount.source]
    if mount.source == "secret":
        return "secret", spec["secretName"]
    if mount.source == "configMap":
        return "configmap", spec["name"]
    return None


def volume_files(mount: Mount, data: Mapping[str, str] | None) -> dict[str, tuple[str, int]]:
    """A configMap or secret volume's files: path -> (content, mode), as the kubelet projects them."""
    spec = mount.volume[mount.source]
    found = volume_object(mount)
    assert found is not None  # callers pass configMap and secret volumes only
    kind, name = found
    if data is None:
        if spec.get("optional", False):
            return {}
        raise ContainerConfigError(f'{kind} "{name}" not found (volume {mount.name})')
    mode = int(spec.get("defaultMode", 0o644))
    if "items" not in spec:
        return {key: (value, mode) for key, value in data.items()}
    files = {}
    for item in spec["items"]:
        if item["key"] in data:
            files[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
        elif not spec.get("optional", False):
            raise ContainerConfigError(f'key "{item["key"]}" not in {kind} "{name}" (volume {mount.name})')
    return files


def volume_env_name(volume: str) -> str:
    """The variable that names a volume's directory: ``KUBESESSIONS_VOLUME_MODEL_CACHE``."""
    return VOLUME_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", volume.upper())


def redirect_paths(
    env: Mapping[str, str], directories: Mapping[str, str], on_host: Callable[[str], bool]
) -> dict[str, str]:
    """``env`` with every value that names a mountPath, or a path below one, pointed at the
    directory standing in for it (``HF_HOME=/models/hf`` -> ``<pod dir>/volumes/models/hf``):
    an app that takes its paths from its env runs unchanged on both nodes. A path below a
    mountPath that exists on the machine (``on_host``) is the machine's (a ``PYTHONPATH`` under
    ``/tmp``, where the scratch volume is mounted): this node's containers share its files."""
    longest_first = sorted(directories.items(), key=lambda item: -len(item[0]))

    def redirect(value: str) -> str:
        for mount_path, directory in longest_first:
            root = mount_path.rstrip("/")
            if root and (value == root or (value.startswith(root + "/") and not on_host(value))):
                return directory + value[len(root) :]
        return value

    return {name: redirect(value) for name, value in env.items()}
