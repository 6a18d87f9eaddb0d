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
    Sam2VideoVideoProcessor,
    Sam3TrackerVideoConfig,
    Sam3TrackerVideoMaskDecoderConfig,
    Sam3TrackerVideoPromptEncoderConfig,
    Sam3VideoConfig,
    Sam3VideoModel,
    Sam3VideoProcessor,
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


def build_sam3(image_size: int = 112, hidden: int = 32, queries: int = 10) -> tuple[Sam3Model, Sam3Processor]:
    """A tiny random ``Sam3Model`` and the ``Sam3Processor`` that feeds it.

    ``image_size`` must be a multiple of the patch size (14); ``hidden`` a multiple
    of 8 (the mask decoder's GroupNorm uses 8 groups); ``queries`` is how many
    objects the detector proposes per phrase.
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
        detr_decoder_config=Sam3DETRDecoderConfig(
            **small, num_layers=2, num_queries=queries, intermediate_size=2 * hidden
        ),
        mask_decoder_config=Sam3MaskDecoderConfig(**small),
    )
    torch.manual_seed(0)
    model = Sam3Model(config).eval()
    image_processor = Sam3ImageProcessor(
        size={"height": image_size, "width": image_size},
        mask_size={"height": grid * 4, "width": grid * 4},
    )
    return model, Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)


def build_sam3_video(image_size: int = 112) -> tuple[Sam3VideoModel, Sam3VideoProcessor]:
    """A tiny random ``Sam3VideoModel``: the tiny SAM 3 detector plus a SAM 2-style tracker on its features.

    The tracker's hidden size is 128 because transformers' SAM 2 family only
    handles object pointers wider than 64; the detector shares it (the tracker
    reads the detector's FPN). Its config accepts every detection as an object
    (thresholds 0) and keeps two queries per phrase, so that tests see a few
    objects appear and be tracked without SAM 3's trained scores.
    """
    hidden = 128
    grid = image_size // 14
    detector, image_processor = build_sam3(image_size, hidden=hidden, queries=2)
    tracker = Sam3TrackerVideoConfig(
        vision_config=detector.config.vision_config,
        prompt_encoder_config=Sam3TrackerVideoPromptEncoderConfig(
            hidden_size=hidden, image_size=image_size, patch_size=14
        ),
        mask_decoder_config=Sam3TrackerVideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        image_size=image_size,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,  # transformers hard-codes 64 in the memory cross-attention
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        # A short memory (the real model: 7 memories, 16 pointers) so that tests reach the
        # point where old memories must be dropped within a few frames.
        num_maskmem=3,
        max_object_pointers_in_encoder=4,
        max_cond_frame_num=2,
    )
    config = Sam3VideoConfig(
        detector_config=detector.config,
        tracker_config=tracker,
        low_res_mask_size=grid * 4,
        score_threshold_detection=0.0,
        new_det_thresh=0.0,
    )
    torch.manual_seed(0)
    model = Sam3VideoModel(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = Sam3VideoProcessor(
        image_processor=image_processor.image_processor,
        video_processor=Sam2VideoVideoProcessor(size=size),
        tokenizer=image_processor.tokenizer,
    )
    return model, processor
