"""A FiftyOne remote model zoo source for Grounded SAM 2.

FiftyOne copies this folder (the one holding ``manifest.json``) into its model
zoo directory when the source is registered, and calls the two hooks below
(``download_model`` and ``load_model``, see ``fiftyone/zoo/models/__init__.py``)::

    import fiftyone.zoo as foz

    foz.register_zoo_model_source("https://github.com/gsam2/grounded-sam2")
    model = foz.load_zoo_model("grounded-sam2", classes=["car", "person"])
    dataset.apply_model(model, label_field="gsam2")

The models are this project's ``gsam2`` package (``pip install gsam2``), which
the manifest lists as a requirement. FiftyOne imports this file on its own,
outside any package, so it imports ``gsam2`` absolutely.
"""

import json
import os

#: Each zoo model: the model class's keyword arguments it starts from (any can be overridden in load_zoo_model).
MODELS = {
    "grounded-sam2": {"media_type": "image"},
    "grounded-sam2-video": {"media_type": "video"},
}


def download_model(model_name, model_path):
    """Record the checkpoints the model uses; the weights come from the Hugging Face hub when it first loads.

    FiftyOne treats ``model_path`` existing as "downloaded". The weights are
    ordinary hub checkpoints that transformers caches itself
    (``HF_HOME``), so they are not copied into the zoo directory.
    """
    from gsam2.core import DEFAULT_DETECTOR, DEFAULT_SEGMENTER

    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}: this source has {', '.join(MODELS)}")
    os.makedirs(model_path, exist_ok=True)
    config = {"detector": DEFAULT_DETECTOR, "segmenter": DEFAULT_SEGMENTER, **MODELS[model_name]}
    with open(os.path.join(model_path, "config.json"), "w") as file:
        json.dump(config, file, indent=2)


def load_model(model_name, model_path, **kwargs):
    """The model, with ``kwargs`` (``classes``, ``prompt``, ``detector``, ``device``...) over its defaults."""
    from gsam2.operators.fiftyone_model import GroundedSam2Model

    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}: this source has {', '.join(MODELS)}")
    config_path = os.path.join(model_path, "config.json")
    config = dict(MODELS[model_name])
    if os.path.exists(config_path):
        with open(config_path) as file:
            config.update(json.load(file))
    config.update(kwargs)
    return GroundedSam2Model(**config)
