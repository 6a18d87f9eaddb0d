"""The reference project's original checkpoints: SAM 2 ``.pt`` through ``sam2``, Grounding DINO ``.pth`` through ``groundingdino``.

Tiny random checkpoints are built here with each package's own model code
(its configs shrunk) and saved in the released layout (``{"model": state_dict}``),
then loaded back through ``from_checkpoint``. Their outputs are random: the
tests check plumbing (shapes, types, coordinates, labels) and that results
match each package's own inference path, never what was found.

These tests need the extras (``pip install "gsam2[sam2-original,groundingdino-original]"``);
the checks of names, errors and imports do not.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import supervision as sv
import pytest
import torch
from gsam2.core import original_checkpoints as oc
from gsam2.core.detectors import Detector
from gsam2.core.errors import ModelLoadError
from gsam2.core.original_checkpoints import (
    OriginalGroundingDinoDetector,
    OriginalSam2Segmenter,
    groundingdino_config_name,
    sam2_config_name,
)
from gsam2.core.segmenter import ImageEmbedding
from PIL import Image

from .conftest import make_tiny_models, shapes_image

PHRASES = ["car", "traffic light"]


def _block_package(monkeypatch, package: str) -> None:
    """Make ``package`` and every submodule already imported unimportable, as if never installed."""
    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


# --------------------------------------------------------------------------- no package needed


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("sam2.1_hiera_large.pt", "sam2.1_hiera_l"),
        ("checkpoints/sam2.1_hiera_tiny.pt", "sam2.1_hiera_t"),
        ("sam2.1_hiera_small.pt", "sam2.1_hiera_s"),
        ("sam2.1_hiera_base_plus.pt", "sam2.1_hiera_b+"),
        ("sam2_hiera_large.pt", "sam2_hiera_l"),
        ("SAM2_Hiera_Tiny.pt", "sam2_hiera_t"),
        ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_b+"),
        ("sam2.1_hiera_l", "sam2.1_hiera_l"),
        ("sam2.1_hiera_large_finetuned.pt", "sam2.1_hiera_l"),
        ("model.pt", None),
        ("sam2.1_hiera_huge.pt", None),
        ("sam2.1_hiera_lx.pt", None),
    ],
)
def test_sam2_config_from_name(name, config):
    assert sam2_config_name(name) == config


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("groundingdino_swint_ogc.pth", "GroundingDINO_SwinT_OGC"),
        ("weights/groundingdino_swinb_cogcoor.pth", "GroundingDINO_SwinB_cfg"),
        ("GroundingDINO_SwinB_cfg.py", "GroundingDINO_SwinB_cfg"),
        ("SwinT_OGC", "GroundingDINO_SwinT_OGC"),
        ("swinb", "GroundingDINO_SwinB_cfg"),
        ("groundingdino.pth", None),
    ],
)
def test_groundingdino_config_from_name(name, config):
    assert groundingdino_config_name(name) == config


def test_the_packages_are_imported_only_when_chosen():
    # Importing the module must not import the optional packages: only the loaders do.
    tree = ast.parse(Path(oc.__file__).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top_level.add(node.module.split(".")[0])
    assert not top_level & {"sam2", "groundingdino", "hydra", "omegaconf", "timm", "addict", "yapf"}


@pytest.mark.parametrize("cls", [OriginalSam2Segmenter, OriginalGroundingDinoDetector])
def test_missing_file_names_the_file(cls, tmp_path):
    missing = tmp_path / "nowhere" / "sam2.1_hiera_tiny.pt"
    with pytest.raises(ModelLoadError, match="nowhere/sam2.1_hiera_tiny.pt.*does not exist"):
        cls.from_checkpoint(missing, "cpu")


def test_missing_sam2_package_says_what_to_install(monkeypatch, tmp_path):
    file = tmp_path / "sam2.1_hiera_large.pt"
    file.write_bytes(b"weights")
    _block_package(monkeypatch, "sam2")
    with pytest.raises(ModelLoadError, match=r'pip install "gsam2\[sam2-original\]"') as error:
        OriginalSam2Segmenter.from_checkpoint(file, "cpu")
    assert "'sam2' package" in str(error.value)


def test_missing_groundingdino_package_says_what_to_install(monkeypatch, tmp_path):
    file = tmp_path / "groundingdino_swint_ogc.pth"
    file.write_bytes(b"weights")
    _block_package(monkeypatch, "groundingdino")
    with pytest.raises(ModelLoadError, match=r'pip install "gsam2\[groundingdino-original\]"') as error:
        OriginalGroundingDinoDetector.from_checkpoint(file, "cpu")
    assert "'groundingdino' package" in str(error.value)


# --------------------------------------------------------------------------- SAM 2


def tiny_sam2_config(path: Path) -> Path:
    """The package's ``sam2.1_hiera_t.yaml`` with every width and depth shrunk, written to ``path``."""
    import sam2
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(sam2.__file__).parent / "configs/sam2.1/sam2.1_hiera_t.yaml")
    model = cfg.model
    trunk = model.image_encoder.trunk
    trunk.embed_dim, trunk.num_heads = 8, 1
    # Five blocks; block 3 is global (a stage's first block pools, so it cannot be).
    trunk.stages, trunk.global_att_blocks = [1, 1, 2, 1], [3]
    neck = model.image_encoder.neck
    neck.d_model, neck.backbone_channel_list = 32, [64, 32, 16, 8]
    neck.position_encoding.num_pos_feats = 32
    # The memory modules only serve video, but must be built: shrink them consistently.
    attention = model.memory_attention
    attention.d_model, attention.num_layers = 32, 1
    attention.layer.d_model, attention.layer.dim_feedforward = 32, 64
    attention.layer.self_attention.embedding_dim = 32
    attention.layer.cross_attention.embedding_dim = 32
    attention.layer.cross_attention.kv_in_dim = 16
    encoder = model.memory_encoder
    encoder.out_dim, encoder.in_dim = 16, 32
    encoder.position_encoding.num_pos_feats = 16
    encoder.mask_downsampler.embed_dim = 32
    encoder.fuser.layer.dim, encoder.fuser.num_layers = 32, 1
    OmegaConf.save(cfg, path)
    return path


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory) -> tuple[Path, Path]:
    """``(checkpoint, config)``: a tiny random SAM 2.1 saved as the release names and lays it out."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    folder = tmp_path_factory.mktemp("sam2-original")
    config = tiny_sam2_config(folder / "tiny_sam2.yaml")
    torch.manual_seed(0)
    model = instantiate(OmegaConf.load(config).model, _recursive_=True)
    checkpoint = folder / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    return checkpoint, config


@pytest.fixture(scope="module")
def sam2_segmenter(tiny_sam2) -> OriginalSam2Segmenter:
    checkpoint, config = tiny_sam2
    return OriginalSam2Segmenter.from_checkpoint(checkpoint, "cpu", config=config)


def test_every_named_sam2_config_ships_with_the_package(tmp_path):
    import sam2

    configs = Path(sam2.__file__).parent / "configs"
    for name in oc.SAM2_CONFIGS:
        resolved, file = oc._sam2_config_file(tmp_path / "x.pt", name, configs)
        assert resolved == name and file.is_file(), name


def test_sam2_embed_and_segment_boxes(sam2_segmenter, monkeypatch):
    images = [shapes_image(120, 160, seed=1), shapes_image(90, 100, seed=2)]
    embeddings = sam2_segmenter.embed(images)
    assert [(e.height, e.width) for e in embeddings] == [(120, 160), (90, 100)]
    assert all(isinstance(e, ImageEmbedding) and len(e.features) == 3 for e in embeddings)

    # Three boxes over two decoder calls: chunking must keep their order.
    monkeypatch.setattr(oc, "MAX_PROMPTS_PER_CALL", 2)
    boxes = np.array([[10, 10, 80, 60], [0, 0, 160, 120], [100.5, 40, 150, 110]], dtype=np.float32)
    masks, scores = sam2_segmenter.segment_boxes(embeddings[0], boxes)
    assert masks.shape == (3, 120, 160) and masks.dtype == bool
    assert scores.shape == (3,) and scores.dtype == np.float32 and np.isfinite(scores).all()

    masks, scores = sam2_segmenter.segment_boxes(embeddings[1], boxes[:1])
    assert masks.shape == (1, 90, 100) and scores.shape == (1,)

    masks, scores = sam2_segmenter.segment_boxes(embeddings[1], np.zeros((0, 4)))
    assert masks.shape == (0, 90, 100) and scores.shape == (0,)

    # The bulk paths ask for compact (or deferred) masks: the same pixels, crops of each mask's extent.
    dense, _ = sam2_segmenter.segment_boxes(embeddings[0], boxes)
    for options in ({"compact": True}, {"defer": True}):
        compact, _ = sam2_segmenter.segment_boxes(embeddings[0], boxes, **options)
        assert isinstance(compact, sv.CompactMask) and np.array_equal(compact.to_dense(), dense)
    assert sam2_segmenter.segment_boxes(embeddings[1], np.zeros((0, 4)), compact=True)[0].shape == (0, 90, 100)


def test_sam2_matches_the_packages_own_predictor(sam2_segmenter):
    # The reference's path: set_image, then predict with the boxes, one image at a time.
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    image = shapes_image(120, 160, seed=3)
    boxes = np.array([[10, 10, 80, 60], [30, 20, 150, 100]], dtype=np.float32)
    reference = SAM2ImagePredictor(sam2_segmenter.model)
    with torch.inference_mode():
        reference.set_image(image)
        expected_masks, expected_scores, _ = reference.predict(box=boxes, multimask_output=False)
        expected_point_mask, expected_point_scores, _ = reference.predict(
            point_coords=np.array([[40.0, 30.0], [120.0, 90.0]]), point_labels=np.array([1, 0]), multimask_output=False
        )

    # Embedded in a batch with another image of another size: must not matter.
    embedding = sam2_segmenter.embed([shapes_image(64, 64, seed=4), image])[1]
    masks, scores = sam2_segmenter.segment_boxes(embedding, boxes)
    np.testing.assert_array_equal(masks, expected_masks[:, 0].astype(bool))
    np.testing.assert_allclose(scores, expected_scores[:, 0], rtol=1e-4, atol=1e-5)

    mask, score = sam2_segmenter.segment_points(embedding, np.array([[40, 30], [120, 90]]), np.array([1, 0]))
    assert mask.shape == (120, 160) and mask.dtype == bool and isinstance(score, float)
    np.testing.assert_array_equal(mask, expected_point_mask[0].astype(bool))
    assert score == pytest.approx(float(expected_point_scores[0]), rel=1e-4, abs=1e-5)

    mask, score = sam2_segmenter.segment_points(embedding, [[40, 30]], [1], box=np.array([10, 10, 80, 60]))
    assert mask.shape == (120, 160) and np.isfinite(score)


def test_sam2_config_is_chosen_from_the_file_name(tiny_sam2):
    # The tiny file is named like the released tiny model, so by default the real
    # sam2.1_hiera_t config is built, and the tiny weights do not fit it.
    checkpoint, _ = tiny_sam2
    with pytest.raises(ModelLoadError, match=r"sam2.1_hiera_tiny.pt.*does not fit config 'sam2.1_hiera_t'"):
        OriginalSam2Segmenter.from_checkpoint(checkpoint, "cpu")


def test_sam2_unknown_config_and_unknown_file_name(tiny_sam2, tmp_path):
    checkpoint, _ = tiny_sam2
    with pytest.raises(ModelLoadError, match=r"SAM 2 config 'sam2.1_hiera_xl' is unknown.*sam2.1_hiera_l"):
        OriginalSam2Segmenter.from_checkpoint(checkpoint, "cpu", config="sam2.1_hiera_xl")
    with pytest.raises(ModelLoadError, match=r"SAM 2 config '.*missing.yaml' is unknown"):
        OriginalSam2Segmenter.from_checkpoint(checkpoint, "cpu", config=tmp_path / "missing.yaml")
    renamed = tmp_path / "my_weights.pt"
    renamed.write_bytes(checkpoint.read_bytes())
    with pytest.raises(ModelLoadError, match=r"cannot tell the SAM 2 config from the file name 'my_weights.pt'"):
        OriginalSam2Segmenter.from_checkpoint(renamed, "cpu")


def test_sam2_corrupt_or_foreign_file_names_the_file(tiny_sam2, tmp_path):
    _, config = tiny_sam2
    corrupt = tmp_path / "sam2.1_hiera_tiny.pt"
    corrupt.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    with pytest.raises(ModelLoadError, match=r"sam2.1_hiera_tiny.pt' is not a readable PyTorch checkpoint"):
        OriginalSam2Segmenter.from_checkpoint(corrupt, "cpu", config=config)

    truncated = tmp_path / "sam2.1_hiera_small.pt"
    truncated.write_bytes(tiny_sam2[0].read_bytes()[:5000])
    with pytest.raises(ModelLoadError, match=r"sam2.1_hiera_small.pt' is not a readable PyTorch checkpoint"):
        OriginalSam2Segmenter.from_checkpoint(truncated, "cpu", config=config)

    foreign = tmp_path / "sam2.1_hiera_large.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ModelLoadError, match=r"sam2.1_hiera_large.pt' has no 'model' state dict"):
        OriginalSam2Segmenter.from_checkpoint(foreign, "cpu", config=config)


def test_sam2_checkpoint_with_training_options_loads(tiny_sam2, tmp_path):
    # Released training checkpoints may keep their argparse options next to the weights.
    import argparse

    checkpoint, config = tiny_sam2
    state = torch.load(checkpoint, weights_only=True)
    with_options = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({**state, "args": argparse.Namespace(lr=1e-4), "epoch": 40}, with_options)
    segmenter = OriginalSam2Segmenter.from_checkpoint(with_options, "cpu", config=config)
    assert isinstance(segmenter, OriginalSam2Segmenter)


# --------------------------------------------------------------------------- Grounding DINO


def tiny_groundingdino_config(path: Path, bert_folder: Path) -> Path:
    """The package's SwinT_OGC config with one encoder and decoder layer, 20 queries and a local BERT.

    ``hidden_dim`` stays 256: the package hard-codes 256-wide text position embeddings.
    """
    import groundingdino

    text = (Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py").read_text()
    overrides = {
        "enc_layers": 1,
        "dec_layers": 1,
        "dim_feedforward": 64,
        "num_queries": 20,
        "enc_n_points": 2,
        "dec_n_points": 2,
        # A local folder instead of the hub's bert-base-uncased: the package reads either.
        "text_encoder_type": str(bert_folder),
    }
    lines = []
    for line in text.splitlines():
        key = line.split("=")[0].strip()
        lines.append(f"{key} = {overrides[key]!r}" if key in overrides else line)
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_swin(modelname: str, pretrain_img_size: int, **kwargs):
    """Swin sizes are a fixed table inside the package, not config values: shrink them here."""
    from groundingdino.models.GroundingDINO.backbone.swin_transformer import SwinTransformer

    return SwinTransformer(
        pretrain_img_size=pretrain_img_size, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], **kwargs
    )


def build_tiny_groundingdino(folder: Path) -> tuple[Path, Path, Path]:
    """``(checkpoint, config, bert folder)``: a tiny random Grounding DINO saved in ``folder`` in the released layout.

    Loading it needs :func:`tiny_swin` in place of the package's Swin builder.
    """
    from groundingdino.models import build_model
    from groundingdino.models.GroundingDINO.backbone import backbone
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertConfig, BertModel

    bert_folder = folder / "tiny-bert"
    tokenizer = make_tiny_models.build_tokenizer()
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=512,
        )
    )
    bert.save_pretrained(bert_folder)
    tokenizer.save_pretrained(bert_folder)
    config = tiny_groundingdino_config(folder / "tiny_groundingdino.py", bert_folder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbone, "build_swin_transformer", tiny_swin)
        args = SLConfig.fromfile(str(config))
        torch.manual_seed(0)
        # The package's own builder; its BERT wrapper needs the transformers 5 stand-in to build.
        import groundingdino.models.GroundingDINO.groundingdino as model_module

        with oc._bert_for_groundingdino(model_module):
            model = build_model(args)
        with torch.no_grad():
            # Random weights put the query-token logits far into sigmoid's saturation; scale
            # the queries down so that scores spread over (0, 1) and their order means something.
            model.transformer.decoder.norm.weight.mul_(0.02)
    checkpoint = folder / "groundingdino_swint_ogc.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    return checkpoint, config, bert_folder


@pytest.fixture(scope="module")
def tiny_groundingdino(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(checkpoint, config, bert folder)`` for a tiny random Grounding DINO in the released layout."""
    from groundingdino.models.GroundingDINO.backbone import backbone

    built = build_tiny_groundingdino(tmp_path_factory.mktemp("groundingdino-original"))
    # Loading builds the same tiny Swin: keep the patch for the whole module.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backbone, "build_swin_transformer", tiny_swin)
        yield built


@pytest.fixture(scope="module")
def gdino(tiny_groundingdino) -> OriginalGroundingDinoDetector:
    checkpoint, config, _ = tiny_groundingdino
    return OriginalGroundingDinoDetector.from_checkpoint(checkpoint, "cpu", config=config)


@pytest.fixture(scope="module")
def small_gdino(gdino) -> OriginalGroundingDinoDetector:
    """The same model on smaller inputs (shorter side 224, not 800): the same code, less CPU time."""
    return OriginalGroundingDinoDetector(gdino.model, gdino.device, resize=224, max_size=400)


def test_every_named_groundingdino_config_ships_with_the_package(tmp_path):
    import groundingdino

    configs = Path(groundingdino.__file__).parent / "config"
    for name in oc.GROUNDINGDINO_CONFIGS:
        resolved, file = oc._groundingdino_config_file(tmp_path / "x.pth", name, configs)
        assert resolved == name and file.is_file(), name


def test_groundingdino_detects_with_the_users_phrases(small_gdino):
    gdino = small_gdino
    assert isinstance(gdino, Detector)
    images = [shapes_image(120, 160, seed=1), shapes_image(90, 200, seed=2)]
    results = gdino.detect(images, PHRASES, box_threshold=0.0, text_threshold=0.0)
    assert len(results) == 2
    for detections, image in zip(results, images):
        height, width = image.shape[:2]
        assert len(detections) == 20  # every query passes zero thresholds
        assert detections.xyxy.dtype == np.float32 and detections.mask is None
        assert (detections.xyxy[:, [0, 2]] >= 0).all() and (detections.xyxy[:, [0, 2]] <= width).all()
        assert (detections.xyxy[:, [1, 3]] >= 0).all() and (detections.xyxy[:, [1, 3]] <= height).all()
        assert (detections.xyxy[:, 2] >= detections.xyxy[:, 0]).all()
        assert (detections.xyxy[:, 3] >= detections.xyxy[:, 1]).all()
        assert ((detections.confidence > 0) & (detections.confidence < 1)).all()
        assert (np.diff(detections.confidence) <= 0).all() and np.ptp(detections.confidence) > 0
        names = detections.data["class_name"].tolist()
        assert set(names) <= set(PHRASES)
        assert names == [PHRASES[i] for i in detections.class_id]

    assert gdino.detect([], PHRASES) == []
    strict = gdino.detect(images[:1], PHRASES, box_threshold=1.0, text_threshold=0.0)[0]
    assert len(strict) == 0


def test_groundingdino_token_phrase_map(gdino):
    # "[CLS] car . t r a f f i c l i g h t . [SEP]" with the tiny vocabulary.
    mapping = gdino.token_phrase_map(PHRASES)
    tokens = gdino.model.tokenizer.convert_ids_to_tokens(gdino.model.tokenizer("car. traffic light.")["input_ids"])
    assert len(mapping) == len(tokens)
    assert [t for t, m in zip(tokens, mapping) if m == 0] == ["car"]
    assert "".join(t.lstrip("#") for t, m in zip(tokens, mapping) if m == 1) == "trafficlight"
    assert all(m == -1 for t, m in zip(tokens, mapping) if t in ("[CLS]", "[SEP]", "."))


def test_groundingdino_same_size_images_share_a_pass_without_changing_results(small_gdino):
    gdino = small_gdino
    image = shapes_image(120, 160, seed=5)
    alone = gdino.detect([image], PHRASES, box_threshold=0.0, text_threshold=0.0)[0]
    # Same size as `image` (one batch of two), plus one of another size (its own pass).
    batch = gdino.detect(
        [shapes_image(120, 160, seed=6), image, shapes_image(70, 90, seed=7)],
        PHRASES,
        box_threshold=0.0,
        text_threshold=0.0,
    )
    np.testing.assert_allclose(batch[1].xyxy, alone.xyxy, atol=1e-3)
    np.testing.assert_allclose(batch[1].confidence, alone.confidence, atol=1e-5)
    assert batch[1].data["class_name"].tolist() == alone.data["class_name"].tolist()


def test_groundingdino_matches_the_packages_own_inference(gdino, tmp_path):
    # The reference's path: load_image (800 / 1333 resize) then predict on one image.
    from groundingdino.util.inference import load_image, predict

    image = shapes_image(120, 160, seed=8)
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    _, tensor = load_image(str(path))
    boxes, logits, _ = predict(gdino.model, tensor, "car. traffic light.", 0.0, 0.0, device="cpu")

    detections = gdino.detect([image], PHRASES, box_threshold=0.0, text_threshold=0.0)[0]
    order = np.argsort(-logits.numpy(), kind="stable")
    cx, cy, w, h = boxes.numpy()[order].T
    expected = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * [160, 120, 160, 120]
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, 160)
    expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, 120)
    np.testing.assert_allclose(detections.confidence, logits.numpy()[order], atol=1e-5)
    np.testing.assert_allclose(detections.xyxy, expected, atol=1e-3)


def test_bert_stand_in_matches_bert(tiny_groundingdino):
    from transformers import BertModel

    bert = BertModel.from_pretrained(tiny_groundingdino[2]).eval()
    stand_in = oc._BertForGroundingDino(bert).eval()
    input_ids = torch.tensor([[2, 5, 20, 3, 0, 0], [2, 7, 8, 9, 10, 3]])
    padding = (input_ids != 0).long()
    with torch.inference_mode():
        expected = bert(input_ids=input_ids, attention_mask=padding).last_hidden_state
        # A 2-D padding mask, and the same mask spelled per token as Grounding DINO passes it.
        flat = stand_in(input_ids=input_ids, attention_mask=padding)["last_hidden_state"]
        per_token = stand_in(input_ids=input_ids, attention_mask=padding[:, None, :].expand(-1, 6, -1).bool())
    torch.testing.assert_close(flat, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(per_token["last_hidden_state"], expected, rtol=1e-5, atol=1e-5)


def test_groundingdino_config_from_file_name_and_errors(tiny_groundingdino, tmp_path):
    checkpoint, _, bert_folder = tiny_groundingdino
    # By name: the real SwinT_OGC config (6 layers, 900 queries), which the tiny weights do not fit.
    with pytest.raises(
        ModelLoadError, match=r"groundingdino_swint_ogc.pth.*does not fit config 'GroundingDINO_SwinT_OGC'"
    ):
        OriginalGroundingDinoDetector.from_checkpoint(checkpoint, "cpu", text_encoder=str(bert_folder))
    with pytest.raises(ModelLoadError, match=r"Grounding DINO config 'SwinL' is unknown"):
        OriginalGroundingDinoDetector.from_checkpoint(checkpoint, "cpu", config="SwinL")
    renamed = tmp_path / "detector.pth"
    renamed.write_bytes(checkpoint.read_bytes())
    with pytest.raises(
        ModelLoadError, match=r"cannot tell the Grounding DINO config from the file name 'detector.pth'"
    ):
        OriginalGroundingDinoDetector.from_checkpoint(renamed, "cpu")


def test_groundingdino_checkpoint_variants(tiny_groundingdino, tmp_path):
    checkpoint, config, _ = tiny_groundingdino
    state = torch.load(checkpoint, weights_only=True)["model"]
    # Saved from DataParallel ("module." prefixes), with a buffer older transformers kept: loads.
    variant = {f"module.{key}": value for key, value in state.items()}
    variant["module.bert.embeddings.position_ids"] = torch.arange(512)[None]
    file = tmp_path / "groundingdino_swint_ogc.pth"
    torch.save({"model": variant}, file)
    detector = OriginalGroundingDinoDetector.from_checkpoint(file, "cpu", config=config)
    torch.testing.assert_close(detector.model.feat_map.weight, state["feat_map.weight"])

    # A few weights missing: loads, and says so.
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("feat_map.")}}, file)
    with pytest.warns(UserWarning, match=r"lacks 2 weights.*feat_map"):
        OriginalGroundingDinoDetector.from_checkpoint(file, "cpu", config=config)

    # Nothing that fits (some other model's weights): refused.
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, file)
    with pytest.raises(ModelLoadError, match=r"groundingdino_swint_ogc.pth' has none of the weights"):
        OriginalGroundingDinoDetector.from_checkpoint(file, "cpu", config=config)


def test_groundingdino_text_encoder_that_cannot_load(tiny_groundingdino, tmp_path):
    checkpoint, config, _ = tiny_groundingdino
    with pytest.raises(ModelLoadError, match=r"text encoder '.*no-bert-here'.*text_encoder="):
        OriginalGroundingDinoDetector.from_checkpoint(
            checkpoint, "cpu", config=config, text_encoder=str(tmp_path / "no-bert-here")
        )


def test_groundingdino_corrupt_file_names_the_file(tiny_groundingdino, tmp_path):
    _, config, _ = tiny_groundingdino
    corrupt = tmp_path / "groundingdino_swint_ogc.pth"
    corrupt.write_bytes(b"<html>not found</html>")
    with pytest.raises(ModelLoadError, match=r"groundingdino_swint_ogc.pth' is not a readable PyTorch checkpoint"):
        OriginalGroundingDinoDetector.from_checkpoint(corrupt, "cpu", config=config)
