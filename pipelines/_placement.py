"""Where and how tasks run on a cluster: small functions the pipelines apply to their tasks.

* :func:`on_cpu`: CPU and memory requests and limits, never a GPU.
* :func:`on_gpu`: the accelerator type and count (pipeline parameters), CPU/memory, node selector and
  toleration (pipeline parameters, as JSON objects), ``/dev/shm`` in memory (NCCL), retries with exponential
  backoff, and optionally the Kueue queue label (a compile-time value: KFP cannot set labels at run time).
* :func:`with_object_store`: the object-store credentials from a Kubernetes Secret (its name is a pipeline
  parameter; the keys are KFP's own Secret's, ``accesskey``/``secretkey``) as ``AWS_*`` variables.

The names here are the ones ``manifests/`` creates (``tests/test_manifests.py`` checks that they agree): the
Secret ``netdiff-object-store``, the run's ServiceAccount ``netdiff-runner`` (``NETDIFF_SERVICE_ACCOUNT``
overrides it; empty: the namespace's default), the LocalQueue ``netdiff-gpu`` and the Kueue
WorkloadPriorityClasses ``netdiff-training`` (preemptible) and ``netdiff-generation``.

``kfp.local`` ignores all of this (it only warns about resources), so a local run uses the same pipeline.
"""

from __future__ import annotations

import os
from typing import Any

from kfp import kubernetes
from kfp.dsl import PipelineTask

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}  # the label NVIDIA's GPU feature discovery sets
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
S3_SECRET = "netdiff-object-store"  # manifests/base; KFP's own mlpipeline-minio-artifact has the same keys
S3_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
S3_ENDPOINT = "http://seaweedfs.kubeflow:9000"  # KFP >= 2.16's object store (SeaweedFS)
KUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"  # a Kueue WorkloadPriorityClass
LOCAL_QUEUE = "netdiff-gpu"  # the LocalQueue of every tenant namespace (manifests/overlays/scheduling)
#: component name -> WorkloadPriorityClass (and PriorityClass) of its pods when they are queued by Kueue
PRIORITY_CLASSES = {"train": "netdiff-training", "generate": "netdiff-generation"}
SERVICE_ACCOUNT = os.environ.get("NETDIFF_SERVICE_ACCOUNT", "netdiff-runner")
GPU_RETRIES = 3
#: name -> (cpu request, cpu limit, memory request, memory limit)
SIZES = {
    "small": ("500m", "1", "512Mi", "1Gi"),
    "medium": ("1", "2", "2Gi", "4Gi"),
    "large": ("2", "4", "4Gi", "8Gi"),
    "gpu": ("4", "8", "16Gi", "32Gi"),
}


def _size(task: PipelineTask, size: str) -> PipelineTask:
    cpu, cpu_max, mem, mem_max = SIZES[size]
    return (task.set_cpu_request(cpu).set_cpu_limit(cpu_max)
            .set_memory_request(mem).set_memory_limit(mem_max))


def on_cpu(task: PipelineTask, size: str = "small", *, cache: bool = True) -> PipelineTask:
    """A CPU task of ``size`` (see :data:`SIZES`), cached or not."""
    return _size(task, size).set_caching_options(enable_caching=cache)


def on_gpu(task: PipelineTask, gpu_type: Any, gpu_count: Any, node_selector: Any, toleration: Any, *,
           queue: str = "", retries: int = GPU_RETRIES) -> PipelineTask:
    """A GPU task: accelerator, node selector, toleration, shared memory, retries, optional Kueue queue (with
    the task's WorkloadPriorityClass from :data:`PRIORITY_CLASSES`)."""
    _size(task, "gpu").set_accelerator_type(gpu_type).set_accelerator_limit(gpu_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, toleration)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    if retries:
        task.set_retry(num_retries=retries, backoff_duration="60s", backoff_factor=2.0,
                       backoff_max_duration="900s")
    if queue:
        kubernetes.add_pod_label(task, KUEUE_LABEL, queue)
        if priority := PRIORITY_CLASSES.get(task.component_spec.name):
            kubernetes.add_pod_label(task, KUEUE_PRIORITY_LABEL, priority)
    return task.set_caching_options(enable_caching=True)


def with_object_store(task: PipelineTask, secret_name: Any) -> PipelineTask:
    """Object-store credentials from the Secret ``secret_name`` as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env=S3_SECRET_KEYS)
    return task
