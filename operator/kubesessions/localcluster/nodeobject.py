"""The process node's Node object and status, as a kubelet would register and report them (pure)."""

from __future__ import annotations

import os

from kubesessions.api.names import JSON
from kubesessions.localcluster.nodeconfig import HOST_IP, NodeConfig

DESCRIPTION = (
    "kube-sessions process node: a development and test node whose pods run as local processes; not a kubelet"
)


def node_object(cfg: NodeConfig) -> JSON:
    labels = {
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubesessions.io/process-node": "true",
    }
    taints = []
    if cfg.gpus:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": cfg.gpu_product,
                "nvidia.com/gpu.count": str(cfg.gpus),
                "nvidia.com/gpu.memory": str(cfg.gpu_memory_mib),
            }
        )
        if cfg.gpu_taint:
            taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": cfg.name,
            "labels": labels,
            "annotations": {"kubesessions.io/process-node": DESCRIPTION},
        },
        "spec": {"taints": taints} if taints else {},
    }


def node_status(cfg: NodeConfig, heartbeat: str, since: str, log_port: int) -> JSON:
    capacity = {
        "cpu": cfg.cpu,
        "memory": cfg.memory,
        "pods": str(cfg.pods),
        "ephemeral-storage": "1Ti",
        "nvidia.com/gpu": str(cfg.gpus),
    }

    def cond(kind: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "ProcessNodeHasSufficientMemory", "not measured"),
            cond("DiskPressure", "False", "ProcessNodeHasNoDiskPressure", "not measured"),
            cond("PIDPressure", "False", "ProcessNodeHasSufficientPID", "not measured"),
            cond("Ready", "True", "ProcessNodeReady", DESCRIPTION),
        ],
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": cfg.name},
        ],
        # The API server calls here for `kubectl logs` (at the InternalIP: no name is looked up).
        "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": os.uname().release,
            "osImage": "kube-sessions process node",
            "containerRuntimeVersion": "process://local",
            "kubeletVersion": "v1.36.4",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
