"""gsam2 on a Ray cluster: many GPUs and machines, the same outputs as one machine.

:func:`label_dataset` labels a FiftyOne dataset or view on Ray (:mod:`.fiftyone_datasets`).
Nothing here imports Ray until a run starts: ``pip install "gsam2[ray]"`` adds it.
"""

from __future__ import annotations

from .fiftyone_datasets import label_dataset

__all__ = ["label_dataset"]
