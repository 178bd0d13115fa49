from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from kubesessions.localcluster import podspec
from kubesessions.localcluster.nodeconfig import DEFAULT_IMAGE_MAP, WORKER_IMAGE, image_repository

pytestmark = pytest.mark.unit

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "local-0", "serviceAccountName": "default"},
    "status": {"podIP": "127.0.0.7", "podIPs": [{"ip": "127.0.0.7"}]},
}


def lookup_from(store: dict[tuple[str, str], dict[str, str]]) -> Any:
    def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
        assert namespace == "ns"
        return store.get((kind, name))

    return lookup


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert podspec.expand("$(A)-$(B)", env) == "1-two"
    assert podspec.expand("$(MISSING)", env) == "$(MISSING)"
    assert podspec.expand("$$(A)", env) == "$(A)"


def test_env_order_sources_and_expansion() -> None:
    container = {
        "envFrom": [{"prefix": "C_", "configMapRef": {"name": "cm"}}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "TOKEN", "value": "literal-wins"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):8080"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "TOKEN"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": True}}},
        ],
    }
    store = {("configmap", "cm"): {"A": "1"}, ("secret", "sec"): {"TOKEN": "s3cret"}}
    env = podspec.container_env(POD, container, lookup_from(store))
    assert env == {
        "C_A": "1",
        "TOKEN": "literal-wins",
        "IP": "127.0.0.7",
        "APP": "x",
        "URL": "http://127.0.0.7:8080",
        "KEY": "s3cret",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}],
            'secret "nope" not found',
        ),
        ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "zz"}}}], 'key "zz" not in'),
        ([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}], "unsupported fieldRef"),
    ],
)
def test_env_errors_are_config_errors(env: list[dict[str, Any]], message: str) -> None:
    store = {("configmap", "cm"): {"A": "1"}}
    with pytest.raises(podspec.ContainerConfigError, match=message):
        podspec.container_env(POD, {"env": env}, lookup_from(store))


def test_resource_field_ref_divides_and_rounds_up() -> None:
    container = {
        "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
        "env": [
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {
                "name": "MEM",
                "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
            },
        ],
    }
    assert podspec.container_env(POD, container, lookup_from({})) == {"CPU": "2", "MEM": "1024"}


@pytest.mark.parametrize(
    ("text", "value"), [("500m", "0.5"), ("2Gi", str(2 * 2**30)), ("1e3", "1000"), ("3", "3")]
)
def test_parse_quantity(text: str, value: str) -> None:
    assert podspec.parse_quantity(text) == Decimal(value)


def test_parse_quantity_refuses_garbage() -> None:
    with pytest.raises(podspec.ContainerConfigError, match="not a quantity"):
        podspec.parse_quantity("12XB")


def test_command_replaces_the_image_and_args_are_expanded() -> None:
    container = {"image": "anything:1", "command": ["python3", "-m", "x"], "args": ["--ip=$(IP)"]}
    assert podspec.container_argv(container, {"IP": "127.0.0.9"}, DEFAULT_IMAGE_MAP) == [
        "python3",
        "-m",
        "x",
        "--ip=127.0.0.9",
    ]


def test_mapped_image_runs_its_command_with_args() -> None:
    container = {"image": f"{WORKER_IMAGE}:0.1.0", "args": ["--port", "8080"]}
    assert podspec.container_argv(container, {}, DEFAULT_IMAGE_MAP) == [
        "kubesessions-worker",
        "--port",
        "8080",
    ]


def test_unmapped_image_without_command_is_not_runnable() -> None:
    with pytest.raises(podspec.ImageNotRunnable, match=r'image "nginx:1.27" has no local command'):
        podspec.container_argv({"image": "nginx:1.27"}, {}, DEFAULT_IMAGE_MAP)


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("python:3.11-slim", "python"),
        ("docker.io/library/python:3.11", "python"),
        ("localhost:5000/team/app:1", "localhost:5000/team/app"),
        ("ghcr.io/x/y@sha256:abc", "ghcr.io/x/y"),
    ],
)
def test_image_repository_strips_tag_digest_and_docker_hub_prefix(image: str, repo: str) -> None:
    assert image_repository(image) == repo


VOLUME_POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {
        "volumes": [
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "settings", "configMap": {"name": "cm", "items": [{"key": "a", "path": "dir/a.json"}]}},
            {"name": "keys", "secret": {"secretName": "sec", "defaultMode": 0o400}},
            {"name": "models", "persistentVolumeClaim": {"claimName": "cache"}},
        ]
    },
}


def mounts_of(*mounts: dict[str, Any]) -> list[podspec.Mount]:
    return podspec.container_mounts(VOLUME_POD, {"volumeMounts": list(mounts)})


def test_emptydir_configmap_and_secret_mounts_are_directories() -> None:
    found = mounts_of(
        {"name": "scratch", "mountPath": "/tmp"},
        {"name": "settings", "mountPath": "/etc/app", "subPath": "dir"},
        {"name": "keys", "mountPath": "/keys"},
    )
    assert [(m.name, m.source, m.mount_path, m.sub_path) for m in found] == [
        ("scratch", "emptyDir", "/tmp", ""),
        ("settings", "configMap", "/etc/app", "dir"),
        ("keys", "secret", "/keys", ""),
    ]
    assert podspec.volume_object(found[1]) == ("configmap", "cm")
    assert podspec.volume_files(found[1], {"a": "{}", "b": "x"}) == {"dir/a.json": ("{}", 0o644)}
    assert podspec.volume_files(found[2], {"k": "v"}) == {"k": ("v", 0o400)}
    with pytest.raises(podspec.ContainerConfigError, match='secret "sec" not found \\(volume keys\\)'):
        podspec.volume_files(found[2], None)
    with pytest.raises(podspec.ContainerConfigError, match='key "a" not in configmap "cm"'):
        podspec.volume_files(found[1], {"b": "x"})


def test_a_volume_the_process_node_cannot_provide_fails_the_container_naming_it() -> None:
    with pytest.raises(
        podspec.ContainerConfigError,
        match='volume "models": persistentVolumeClaim volumes are not provided by the process node',
    ):
        mounts_of({"name": "models", "mountPath": "/models"})
    with pytest.raises(podspec.ContainerConfigError, match='the pod has no volume "nope"'):
        mounts_of({"name": "nope", "mountPath": "/x"})


def test_env_paths_under_a_mount_point_at_its_directory() -> None:
    env = {
        "TMPDIR": "/tmp",
        "HF_HOME": "/models/hf",
        "OTHER": "/modelsx",
        "PLAIN": "models",
        "PYTHONPATH": "/tmp/my-app",
    }
    directories = {"/tmp": "/pods/u/volumes/scratch", "/models": "/pods/u/volumes/models"}
    on_host = {"/tmp", "/tmp/my-app"}.__contains__
    assert podspec.redirect_paths(env, directories, on_host) == {
        "TMPDIR": "/pods/u/volumes/scratch",
        "HF_HOME": "/pods/u/volumes/models/hf",
        "OTHER": "/modelsx",
        "PLAIN": "models",
        "PYTHONPATH": "/tmp/my-app",  # the machine's own directory, left alone
    }
    assert podspec.volume_env_name("model-cache") == "KUBESESSIONS_VOLUME_MODEL_CACHE"


def test_the_api_token_volume_is_left_to_the_kubeconfig() -> None:
    token = {
        "name": "kube-api-access-x",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"volumes": [token]}}
    mount = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    assert podspec.container_mounts(pod, {"volumeMounts": [mount]}) == []
