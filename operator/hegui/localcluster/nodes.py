"""The simulated nodes kwok runs: one CPU node and two GPU nodes.

kwok manages nodes carrying the `kwok.x-k8s.io/node: fake` annotation: it keeps them Ready
(heartbeats through leases) and moves pods scheduled onto them to Running. GPU nodes advertise
`nvidia.com/gpu` capacity and the labels the NVIDIA GPU operator puts on real GPU nodes, so the
scheduler places GPU pods exactly as it would on a real cluster.
"""

from __future__ import annotations

from typing import Any

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPUS_PER_NODE = 4


def _node(name: str, *, cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    capacity = {"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "200Gi"}
    if gpus:
        labels[GPU_PRESENT_LABEL] = "true"
        labels["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3"
        labels["nvidia.com/gpu.count"] = str(gpus)
        capacity[GPU_RESOURCE] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
            },
            "phase": "Running",
        },
    }


def simulated_nodes() -> list[dict[str, Any]]:
    return [
        _node("kwok-cpu-0", cpu="16", memory="64Gi"),
        _node("kwok-gpu-0", cpu="64", memory="512Gi", gpus=GPUS_PER_NODE),
        _node("kwok-gpu-1", cpu="64", memory="512Gi", gpus=GPUS_PER_NODE),
    ]
