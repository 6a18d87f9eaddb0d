"""A tiny, randomly initialised SAM 3 (``Sam3Model`` + ``Sam3Processor``) for offline tests.

Every part is the real transformers architecture built from the real config
classes (ViT backbone + FPN neck, CLIP text encoder, geometry encoder, DETR
encoder/decoder, mask decoder), shrunk to one or two narrow layers and a 112
pixel input, so that ``save_pretrained`` + ``Sam3Detector.from_pretrained``
exercise exactly the loading code ``facebook/sam3`` goes through. Its outputs
are random: tests use it for plumbing (shapes, sizes, labels, thresholds),
never for what was found.
"""

from __future__ import annotations

import string

import torch
from transformers import (
    CLIPTextConfig,
    CLIPTokenizer,
    Sam3Config,
    Sam3DETRDecoderConfig,
    Sam3DETREncoderConfig,
    Sam3GeometryEncoderConfig,
    Sam3ImageProcessor,
    Sam3MaskDecoderConfig,
    Sam3Model,
    Sam3Processor,
    Sam3VisionConfig,
    Sam3ViTConfig,
)

# Self-contained (no import of make_tiny_models) so that make_tiny_models, which is also
# run as a script, can load this file by path.
_WORDS = ["car", "person", "dog", "cat", "cup", "astronaut", "red", "square", "circle", "blue"]
_CHARS = list(string.ascii_lowercase + string.digits + ".,-'!?&/()")
# Sam3Processor always pads prompts to 32 tokens (``padding="max_length", max_length=32``),
# so the text encoder needs 32 positions even in a tiny model; facebook/sam3 has 32 too.
TEXT_POSITIONS = 32


def build_sam3_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer over single characters plus the example words, 32 tokens long."""
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for char in _CHARS:
            vocab[char + suffix] = len(vocab)
    merges = []
    for word in _WORDS:  # merge each example word left to right into one token
        piece = word[0]
        for index, char in enumerate(word[1:], start=1):
            right = char + ("</w>" if index == len(word) - 1 else "")
            merges.append((piece, right))
            piece += right
            vocab.setdefault(piece, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=TEXT_POSITIONS)


def build_sam3(image_size: int = 112, hidden: int = 32) -> tuple[Sam3Model, Sam3Processor]:
    """A tiny random ``Sam3Model`` and the ``Sam3Processor`` that feeds it.

    ``image_size`` must be a multiple of the patch size (14); ``hidden`` a multiple
    of 8 (the mask decoder's GroupNorm uses 8 groups).
    """
    patch = 14
    grid = image_size // patch  # ViT tokens per side (8 for 112 px)
    tokenizer = build_sam3_tokenizer()
    backbone = Sam3ViTConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        window_size=grid // 2,
        global_attn_indexes=[1],
        pretrain_image_size=image_size // 2,  # position embeddings get tiled, as for the real 336 -> 1008
    )
    vision = Sam3VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=hidden,
        # FPN levels at scale 4, 2, 1 (and 0.5, which the image model drops).
        backbone_feature_sizes=[[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]],
    )
    text = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TEXT_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    small = {"hidden_size": hidden, "num_attention_heads": 2, "dropout": 0.0}
    config = Sam3Config(
        vision_config=vision,
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(**small, num_layers=1, intermediate_size=2 * hidden),
        detr_encoder_config=Sam3DETREncoderConfig(**small, num_layers=1, intermediate_size=2 * hidden),
        detr_decoder_config=Sam3DETRDecoderConfig(**small, num_layers=2, num_queries=10, intermediate_size=2 * hidden),
        mask_decoder_config=Sam3MaskDecoderConfig(**small),
    )
    torch.manual_seed(0)
    model = Sam3Model(config).eval()
    image_processor = Sam3ImageProcessor(
        size={"height": image_size, "width": image_size},
        mask_size={"height": grid * 4, "width": grid * 4},
    )
    return model, Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)
