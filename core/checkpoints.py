"""Checks on a checkpoint before its weights load."""

from __future__ import annotations


def require_model_type(checkpoint: str, model_types: set[str], what: str) -> None:
    """Refuse a checkpoint of another architecture with one line, before loading it.

    transformers loads, say, a Grounding DINO folder as ``Sam2Model`` with only
    warnings (every weight "newly initialised"), and the mistake would surface
    later as a ``TypeError`` on every image. The config's ``model_type`` says
    what the checkpoint is.

    Raises:
        ValueError: the checkpoint is not one of ``model_types``; the model loaders
            turn it into a ``ModelLoadError`` naming the checkpoint.
    """
    from transformers import AutoConfig

    model_type = getattr(AutoConfig.from_pretrained(checkpoint), "model_type", None)
    if model_type not in model_types:
        raise ValueError(f"a {model_type or 'unknown'} checkpoint, not {what}")
