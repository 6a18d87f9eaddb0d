"""Write tiny, randomly initialised checkpoints for offline tests.

    python tests/make_tiny_models.py OUTDIR

creates ``OUTDIR/grounding-dino``, ``OUTDIR/sam2``, ``OUTDIR/sam2-video`` and the other backends' folders
(``write_tiny_models``): real transformers
architectures (the same config classes as the hub checkpoints) shrunk to a few
small layers, saved with ``save_pretrained`` so that the project's loaders read
them exactly as they read ``IDEA-Research/grounding-dino-tiny`` or
``facebook/sam2.1-hiera-tiny``. Their outputs are random: tests use them for
plumbing (shapes, coordinates, formats), never for what was detected.
"""

from __future__ import annotations

import argparse
import importlib.util
import string
import sys
import tempfile
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertTokenizerFast,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2ImageProcessor,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2Processor,
    Sam2PromptEncoderConfig,
    Sam2VisionConfig,
    SwinConfig,
)

# Whole words the example prompts use, then single characters and word pieces
# so that any lower-case prompt tokenizes without [UNK].
_WORDS = ["car", "person", "dog", "cat", "cup", "astronaut", "red", "square", "circle", "blue"]
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = list(string.ascii_lowercase + string.digits + ".,-'!?&/()")


def build_tokenizer() -> BertTokenizerFast:
    vocab = _SPECIAL + _WORDS + _CHARS + ["##" + c for c in string.ascii_lowercase + string.digits]
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n")
        # from_pretrained on a folder holding vocab.txt is the one spelling that
        # transformers 4.x and 5.x both read into a fast tokenizer.
        return BertTokenizerFast.from_pretrained(tmp, do_lower_case=True)


def build_grounding_dino(
    image_size: int = 128, config_class=GroundingDinoConfig, model_class=GroundingDinoForObjectDetection
) -> tuple[GroundingDinoForObjectDetection, GroundingDinoProcessor]:
    tokenizer = build_tokenizer()
    backbone = SwinConfig(
        image_size=image_size,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    text = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    config = config_class(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        num_queries=20,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_feature_levels=4,
        encoder_n_points=2,
        decoder_n_points=2,
    )
    torch.manual_seed(0)
    model = model_class(config).eval()
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": image_size, "longest_edge": image_size * 2})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_mm_grounding_dino(image_size: int = 128):
    """MM-Grounding-DINO: Grounding DINO's tiny config under ``MMGroundingDinoConfig`` (whose defaults the hub's
    ``openmmlab-community/mm_grounding_dino_*`` conversions keep), with Grounding DINO's processor as they ship it."""
    from transformers import MMGroundingDinoConfig, MMGroundingDinoForObjectDetection

    return build_grounding_dino(image_size, MMGroundingDinoConfig, MMGroundingDinoForObjectDetection)


def build_sam2(image_size: int = 256, hidden: int = 64) -> tuple[Sam2Model, Sam2Processor]:
    dims = [8, 16, 32, 64]
    backbone = Sam2HieraDetConfig(
        image_size=[image_size, image_size],
        hidden_size=dims[0],
        embed_dim_per_stage=dims,
        blocks_per_stage=[1, 2, 1, 1],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 4, 4, 2],
        global_attention_blocks=[2],
    )
    stride = image_size // 4
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(reversed(dims)),
        backbone_feature_sizes=[[stride, stride], [stride // 2, stride // 2], [stride // 4, stride // 4]],
        fpn_hidden_size=hidden,
    )
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(hidden_size=hidden, image_size=image_size, patch_size=16),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
    )
    torch.manual_seed(0)
    model = Sam2Model(config).eval()
    image_processor = Sam2ImageProcessor(
        size={"height": image_size, "width": image_size},
        mask_size={"height": image_size // 4, "width": image_size // 4},
    )
    return model, Sam2Processor(image_processor=image_processor)


def build_sam2_video(image_size: int = 256):
    """The SAM 2 video model (memory attention + memory encoder) on the same tiny image backbone."""
    from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor, Sam2VideoVideoProcessor

    # transformers' SAM 2 video splits object pointers into 64-wide memory tokens and only
    # handles hidden sizes above 64 (the real models use 256).
    hidden = 128
    image_model, _ = build_sam2(image_size, hidden=hidden)
    config = Sam2VideoConfig(
        vision_config=image_model.config.vision_config,
        prompt_encoder_config=image_model.config.prompt_encoder_config,
        mask_decoder_config=image_model.config.mask_decoder_config,
        image_size=image_size,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[image_size // 16, image_size // 16],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,  # transformers hard-codes 64 in the memory cross-attention
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
    )
    torch.manual_seed(0)
    model = Sam2VideoModel(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size={"height": image_size // 4, "width": image_size // 4}),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )
    return model, processor


def build_edgetam_video(image_size: int = 128):
    """EdgeTAM video (``EdgeTamVideoModel`` + ``Sam2VideoProcessor``) shaped as ``yonigozlan/EdgeTAM-hf``: a timm
    RepViT-M1 image encoder (random, 1 block per stage), the 2D Spatial Perceiver over memories, and the
    converted checkpoint's switches (no temporal encoding of object pointers, no occlusion embedding), shrunk."""
    from transformers import (
        EdgeTamVideoConfig,
        EdgeTamVideoMaskDecoderConfig,
        EdgeTamVideoModel,
        EdgeTamVideoPromptEncoderConfig,
        EdgeTamVisionConfig,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
        TimmWrapperConfig,
    )

    hidden = 128  # as SAM 2 video: object pointers split into 64-wide memory tokens
    dims = [8, 16, 32, 64]  # RepViT's 4 stages, strides 4, 8, 16, 32
    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        model_args={"in_chans": 3, "features_only": True, "out_indices": (0, 1, 2, 3), "embed_dim": tuple(dims),
                    "depth": (1, 1, 1, 1)},
    )
    stride = image_size // 4
    vision = EdgeTamVisionConfig(
        backbone_config=backbone,
        backbone_channel_list=list(reversed(dims)),
        backbone_feature_sizes=[[stride, stride], [stride // 2, stride // 2], [stride // 4, stride // 4]],
        fpn_hidden_size=hidden,
    )
    config = EdgeTamVideoConfig(
        vision_config=vision,
        prompt_encoder_config=EdgeTamVideoPromptEncoderConfig(hidden_size=hidden, image_size=image_size, patch_size=16),
        mask_decoder_config=EdgeTamVideoMaskDecoderConfig(
            hidden_size=hidden, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32
        ),
        image_size=image_size,
        enable_temporal_pos_encoding_for_object_pointers=False,
        enable_occlusion_spatial_embedding=False,
        max_object_pointers_in_encoder=4,  # 16 real: a session keeps 8 frames of memory, not 17
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_mlp_hidden_size=64,
        memory_attention_rope_feat_sizes=[image_size // 16, image_size // 16],
        # The perceiver keeps 8 global latents and a 2x2 grid of window latents per memory (256 + 16x16 real).
        perceiver_resampler_num_latents=8,
        perceiver_resampler_num_latents_2d=4,
        memory_attention_rope_k_sizes=[2, 2],
        perceiver_resampler_hidden_size=64,  # = the memory channels (transformers hard-codes 64)
        perceiver_resampler_mlp_intermediate_size=64,
        perceiver_resampler_num_layers=1,
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=64,
        memory_fuser_num_layers=1,
    )
    torch.manual_seed(0)
    model = EdgeTamVideoModel(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=size, mask_size={"height": image_size // 4, "width": image_size // 4}),
        video_processor=Sam2VideoVideoProcessor(size=size),
    )
    return model, processor


def build_clip_tokenizer():
    """A CLIP BPE tokenizer over single characters plus the example words (OWLv2 reads CLIP's format)."""
    from transformers import CLIPTokenizer

    vocab = {}
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
    # Special tokens last, as in CLIP: OWL treats a query whose first id is 0 as padding.
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token="!", model_max_length=16)


def build_owlv2(image_size: int = 64):
    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
        Owlv2TextConfig,
        Owlv2VisionConfig,
    )

    tokenizer = build_clip_tokenizer()
    text = Owlv2TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = Owlv2VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=16,
    )
    config = Owlv2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16)
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    image_processor = Owlv2ImageProcessor(size={"height": image_size, "width": image_size})
    return model, Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)


def _load_sibling(name: str):
    """A module next to this file, loaded by path (this file also runs as a script, outside the tests package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_florence2():
    """Florence-2 (``tests/tiny_florence2.py``): loaded with ``Florence2.from_pretrained``, not AutoModel."""
    return _load_sibling("tiny_florence2").build_florence2()


def build_sam3():
    """SAM 3 (``tests/tiny_sam3.py``): ``Sam3Model`` + ``Sam3Processor``, read by ``Sam3Detector.from_pretrained``."""
    return _load_sibling("tiny_sam3").build_sam3()


def build_sam3_video():
    """SAM 3 video (``tests/tiny_sam3.py``): ``Sam3VideoModel`` + ``Sam3VideoProcessor``."""
    return _load_sibling("tiny_sam3").build_sam3_video()


def write_tiny_models(outdir: str | Path) -> dict[str, Path]:
    """Write every tiny checkpoint under ``outdir``; return their folders by name."""
    outdir = Path(outdir)
    written = {}
    for name, build in (
        ("grounding-dino", build_grounding_dino),
        ("mm-grounding-dino", build_mm_grounding_dino),
        ("sam2", build_sam2),
        ("sam2-video", build_sam2_video),
        ("edgetam-video", build_edgetam_video),
        ("owlv2", build_owlv2),
        ("florence2", build_florence2),
        ("sam3", build_sam3),
        ("sam3-video", build_sam3_video),
    ):
        model, processor = build()
        target = outdir / name
        model.save_pretrained(target)
        processor.save_pretrained(target)
        written[name] = target
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir", help="folder to write the tiny checkpoints into")
    args = parser.parse_args(argv)
    for name, path in write_tiny_models(args.outdir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
