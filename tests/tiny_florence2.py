"""A tiny, randomly initialised Florence-2 (``Florence2ForConditionalGeneration`` + ``Florence2Processor``).

The real architecture from the real config classes: the DaViT vision tower
(``Florence2VisionConfig``), the multi-modal projector and a BART
encoder-decoder, shrunk to one narrow layer per stage and a 64 pixel input, so
that ``save_pretrained`` + ``Florence2.from_pretrained`` exercise exactly the
loading code ``florence-community/Florence-2-large`` goes through.

The tokenizer is what ``Florence2Processor`` requires of Florence-2's: a BART
byte-level BPE (here over single bytes plus a few merged words) with the
processor's ``<image>`` token as a named extra special token and Florence-2's
added tokens (``<od>``, ``<loc_0>`` ... ``<loc_999>``, ``<poly>``, ``<and>``, ...).
The processor also needs ``post_processor_config``: without it
``post_process_generation`` rejects every task.

Outputs are random: tests use it for plumbing (parsing, sizes, coordinate
ranges), never for what was found.
"""

from __future__ import annotations

import math

import torch
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    BartConfig,
    BartTokenizer,
    CLIPImageProcessor,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Florence2VisionConfig,
)

# Self-contained (no import of make_tiny_models) so that make_tiny_models, which is also
# run as a script, can load this file by path.
_WORDS = ["car", "person", "dog", "cat", "cup", "astronaut", "red", "square", "circle", "blue", "the", "image"]

#: Florence-2's added tokens, in the order its original processor adds them.
FLORENCE2_ADDED_TOKENS = (
    ["<od>", "</od>", "<ocr>", "</ocr>"]
    + [f"<loc_{index}>" for index in range(1000)]
    + ["<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>"]
    + ["<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>"]
    + ["</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>"]
)

#: What ``Florence2PostProcessor`` reads: one entry per parse type it is asked for
#: (the hub checkpoints' list of banned grounding phrases is longer).
POST_PROCESSOR_CONFIG = {
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image", "image", "the", "a", "an", "it"]},
    "pure_text": {},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}


def build_florence2_tokenizer() -> BartTokenizer:
    """A BART byte-level BPE over all 256 bytes (nothing is ever unknown) plus the example words."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for char in sorted(ByteLevel.alphabet()):
        vocab.setdefault(char, len(vocab))
    merges = []
    for word in _WORDS:  # merge "Ġword" (the word after a space) left to right into one token
        piece = "Ġ"
        for char in word:
            merges.append((piece, char))
            piece += char
            vocab.setdefault(piece, len(vocab))
    vocab["<mask>"] = len(vocab)
    # The processor reads ``tokenizer.image_token`` / ``image_token_id``: a named extra special token.
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    tokenizer.add_special_tokens({"extra_special_tokens": FLORENCE2_ADDED_TOKENS}, replace_extra_special_tokens=False)
    return tokenizer


def build_florence2(
    image_size: int = 64, hidden: int = 16
) -> tuple[Florence2ForConditionalGeneration, Florence2Processor]:
    """A tiny random ``Florence2ForConditionalGeneration`` and the ``Florence2Processor`` that feeds it.

    ``image_size`` must be a multiple of 32 (the vision tower's total stride).
    """
    tokenizer = build_florence2_tokenizer()
    patch_stride = (4, 2, 2, 2)
    grid = image_size // math.prod(patch_stride)  # vision tokens per side (2 for 64 px)
    vision = Florence2VisionConfig(
        depths=[1, 1, 1, 1],
        patch_stride=list(patch_stride),
        embed_dim=[8, 8, 16, 16],
        num_heads=[1, 1, 2, 2],
        num_groups=[1, 1, 2, 2],
        window_size=2,
        drop_path_rate=0.0,
        projection_dim=hidden,  # the projector maps vision features to the text model's width
        max_position_embeddings=max(grid, 2),
        max_temporal_embeddings=1,
    )
    text = BartConfig(
        vocab_size=len(tokenizer),
        d_model=hidden,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * hidden,
        decoder_ffn_dim=2 * hidden,
        # As the real checkpoints: image tokens + prompt in the encoder, up to 1024 new tokens in the decoder.
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
    )
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tokenizer.image_token_id)
    torch.manual_seed(0)
    model = Florence2ForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        # One token per cell of the last stage's grid plus one pooled token (577 for 768 px).
        image_seq_length=grid * grid + 1,
    )
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config=POST_PROCESSOR_CONFIG
    )
    return model, processor
