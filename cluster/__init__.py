"""gsam2 on a Ray cluster: bulk images and videos over many GPUs and machines, the same outputs as one machine.

Ray is optional (``pip install "gsam2[ray]"``); nothing here imports it until a run asks for it.
:mod:`.workers` holds what every Ray job shares (connecting, sizing the pool, the model-holding worker);
:mod:`.images` and :mod:`.videos` are the pipelines of ``gsam2 image|autolabel|video --ray``;
:func:`label_dataset` labels a FiftyOne dataset or view on a cluster (:mod:`.fiftyone_datasets`, which
imports FiftyOne only when it runs).
"""

from __future__ import annotations

from .fiftyone_datasets import label_dataset

__all__ = ["label_dataset"]
