"""The form's "Ray cluster address" (next to *Background runs*): label the target view on a Ray cluster.

Empty (the default): the run is here, or in background runs (``num_shards``).
An address: :func:`~..cluster.fiftyone_datasets.label_on_ray` runs it, the
view's sample ids cut into ranges when it starts, Ray workers labelling the
ranges and writing into the same database. Two more fields then size the
pool; empty, they take the cluster's defaults (one worker per GPU).

Nothing here connects to the cluster: the form is rebuilt on every change, and
an address that does not answer is reported, in one line, when the run starts.
"""

from __future__ import annotations

import math
from typing import Any

from fiftyone.operators import types

from ..cluster.fiftyone_datasets import wants_ray
from ..core.errors import InputError
from . import forms
from .sharding import whole_number


def add_ray_inputs(inputs: types.Object, params: dict[str, Any]) -> None:
    """``ray_address`` and, once one is given, ``ray_workers`` and ``ray_gpus_per_worker``."""
    address = inputs.str(
        "ray_address",
        label="Ray cluster address",
        description="Empty: run here. auto, HOST:PORT or ray://HOST:10001: label on that Ray cluster's workers "
        '(gsam2[ray] installed on every machine; FIFTYONE_DATABASE_URI a MongoDB they all reach)',
    )
    forms.flag_problem(address, lambda: wants_ray(params))  # not together with background runs
    if not (params.get("ray_address") or "").strip():
        return
    workers = inputs.int(
        "ray_workers",
        label="Ray workers",
        description="Model replicas (empty: one per GPU of the cluster, 1 on a cluster without GPUs)",
    )
    forms.flag_problem(workers, lambda: check_workers(params.get("ray_workers")))
    gpus = inputs.float(
        "ray_gpus_per_worker",
        label="GPUs per Ray worker",
        description="Empty: 1 on a cluster with GPUs, else 0; fractions (0.5) put several replicas on a GPU",
    )
    forms.flag_problem(gpus, lambda: check_gpus_per_worker(params.get("ray_gpus_per_worker")))


def check_workers(value: Any) -> None:
    if value is not None:
        whole_number("workers", value, minimum=1, default=1)


def check_gpus_per_worker(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise InputError(f"GPUs per worker {value!r}: must be 0 or more (fractions share a GPU)")
