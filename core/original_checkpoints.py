"""The reference Grounded-SAM-2 project's original checkpoints, as optional extras.

* :class:`OriginalSam2Segmenter` loads a SAM 2 / 2.1 ``.pt`` file
  (``sam2.1_hiera_large.pt``, ...) with Meta's ``sam2`` package and segments
  through its ``SAM2ImagePredictor``; extra ``sam2-original``.
* :class:`OriginalGroundingDinoDetector` loads a Grounding DINO ``.pth`` file
  (``groundingdino_swint_ogc.pth``, ``groundingdino_swinb_cogcoor.pth``) with
  the ``groundingdino`` package (PyPI ``rf-groundingdino``, pure Python);
  extra ``groundingdino-original``.

Both packages are imported only when one of these classes loads a checkpoint,
so the rest of the project never needs them. As in the reference, the config
is chosen from the checkpoint's file name unless one is given.

The two classes have the same public interface as their ``transformers``
counterparts (:class:`~.segmenter.Sam2ImageSegmenter`,
:class:`~.detectors.grounding_dino.GroundingDinoDetector`), so every pipeline
takes either.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import supervision as sv
import torch
from PIL import Image

from .detectors.grounding_dino import GroundingDinoDetector, select_detections
from .devices import inference_context
from .errors import ModelLoadError
from .prompts import prompt_text
from .segmenter import MAX_PROMPTS_PER_CALL, ImageEmbedding

SAM2_EXTRA = "sam2-original"
GROUNDINGDINO_EXTRA = "groundingdino-original"

#: The configs that ship with the ``sam2`` package, by the names the reference uses.
SAM2_CONFIGS = tuple(f"{version}_hiera_{size}" for version in ("sam2.1", "sam2") for size in ("t", "s", "b+", "l"))
_SAM2_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "base-plus": "b+", "baseplus": "b+", "large": "l"}
# ``sam2.1_hiera_large.pt``, ``sam2_hiera_b+.yaml``, ``configs/sam2.1/sam2.1_hiera_t.yaml``, ...
_SAM2_NAME = re.compile(r"(sam2(?:\.1)?)_hiera_(tiny|small|base[_-]?plus|large|b\+|t|s|l)(?![a-z0-9+])", re.IGNORECASE)
# What ``sam2.build_sam.build_sam2`` adds to every image model (``apply_postprocessing``):
# fall back to multi-mask output when a single mask is unstable.
_SAM2_POSTPROCESSING = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}

#: The configs that ship with the ``groundingdino`` package, by file-name stem.
GROUNDINGDINO_CONFIGS = ("GroundingDINO_SwinT_OGC", "GroundingDINO_SwinB_cfg")

# Grounding DINO's image preprocessing in the reference (``load_image``):
# shorter side to 800 pixels, longer side at most 1333, ImageNet normalisation.
GROUNDINGDINO_RESIZE = 800
GROUNDINGDINO_MAX_SIZE = 1333
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]

# Building Grounding DINO swaps one class inside the package (see _bert_for_groundingdino).
_BUILD_LOCK = threading.Lock()


# --------------------------------------------------------------------------- shared helpers


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_error_detail(error: BaseException) -> str:
    """The useful sentence of a ``torch.load`` error (they run to several paragraphs)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:  # the safe unpickler met something that is not a tensor or a container
        lines = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
        detail = lines[0].split(". ")[0] if lines else "unknown content"
        return f"only tensors are read from a checkpoint, and this file holds something else ({detail})"
    return _first_line(error).split(". ")[0]


def _missing_package(what: str, package: str, extra: str, error: ImportError) -> ModelLoadError:
    return ModelLoadError(
        f"{what} checkpoints need the {package!r} package, which cannot be imported ({_first_line(error)}); "
        f'install it with: pip install "gsam2[{extra}]"'
    )


def _checkpoint_file(checkpoint: str | Path) -> Path:
    file = Path(checkpoint).expanduser()
    if not file.is_file():
        raise ModelLoadError(f"checkpoint file {str(checkpoint)!r} does not exist")
    return file


def _sidecar_config(checkpoint: Path, suffixes: tuple[str, ...]) -> Path | None:
    """A config file saved beside the checkpoint under the same name (``my_finetune.pth`` + ``my_finetune.py``).

    Fine-tuned checkpoints rarely keep the released file names, and the CLI,
    the operators and the CVAT functions name a detector with one string: the
    config travels with the file instead.
    """
    for suffix in suffixes:
        candidate = checkpoint.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """The ``"model"`` state dict of a released checkpoint (both projects save ``{"model": ...}``).

    Loaded with ``weights_only=True``: a ``.pt`` file is a pickle, and only
    tensors and plain containers are let through.
    """
    try:
        # Training checkpoints often carry their argparse options beside the weights:
        # an inert record, safe to let through.
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise ModelLoadError(
            f"checkpoint file {str(file)!r} is not a readable PyTorch checkpoint: {_load_error_detail(error)}"
        ) from error
    state = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelLoadError(f"checkpoint file {str(file)!r} has no 'model' state dict: is it a released checkpoint?")
    return state


def _load_weights(model: torch.nn.Module, state: dict, file: Path, config: str, strict: bool) -> None:
    """Load ``state`` into ``model``; say which file and config disagree when they do.

    ``strict=False`` (how the reference loads Grounding DINO) ignores extra keys,
    such as the ``position_ids`` buffers older ``transformers`` saved, and warns
    about missing ones, but still refuses a file none of whose weights fit.
    """
    hint = "; if the file was renamed, name its config with config=..."
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches raise even when not strict
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else _first_line(error)
        raise ModelLoadError(f"checkpoint file {str(file)!r} does not fit config {config!r}: {detail}{hint}") from error
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    expected = len(model.state_dict())
    if strict and (missing or unexpected):
        raise ModelLoadError(
            f"checkpoint file {str(file)!r} does not fit config {config!r}: {len(missing)} weights missing "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}{hint}"
        )
    if len(missing) == expected:
        raise ModelLoadError(f"checkpoint file {str(file)!r} has none of the weights config {config!r} needs{hint}")
    if missing:
        warnings.warn(
            f"checkpoint file {str(file)!r} lacks {len(missing)} weights of config {config!r} "
            f"(left as initialised): {missing[:5]}",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- SAM 2


def sam2_config_name(name: str) -> str | None:
    """The ``sam2`` config for a checkpoint or config name, e.g. ``"sam2.1_hiera_l"``; ``None`` if unknown.

    Reads the released file names (``sam2.1_hiera_large.pt``,
    ``sam2_hiera_base_plus.pt``) as well as config names in the reference's
    spellings (``sam2.1_hiera_l``, ``configs/sam2.1/sam2.1_hiera_l.yaml``).
    """
    match = _SAM2_NAME.search(name)
    if match is None:
        return None
    version, size = match.group(1).lower(), match.group(2).lower()
    return f"{version}_hiera_{_SAM2_SIZES.get(size, size)}"


def _import_sam2() -> SimpleNamespace:
    try:
        import sam2
        from hydra.utils import instantiate
        from omegaconf import OmegaConf
        from sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError as error:
        raise _missing_package("original SAM 2 (.pt)", "sam2", SAM2_EXTRA, error) from error
    return SimpleNamespace(
        configs=Path(sam2.__file__).parent / "configs",
        instantiate=instantiate,
        OmegaConf=OmegaConf,
        SAM2ImagePredictor=SAM2ImagePredictor,
    )


def _sam2_config_file(checkpoint: Path, config: str | Path | None, configs_dir: Path) -> tuple[str, Path]:
    """``(name, yaml file)`` of the config to build: the one given, or the one the file name implies."""
    if config is not None:
        path = Path(config).expanduser()
        if path.suffix in (".yaml", ".yml") and path.is_file():
            return str(path), path
        name = sam2_config_name(str(config))
        if name is None:
            raise ModelLoadError(
                f"SAM 2 config {str(config)!r} is unknown: use one of {', '.join(SAM2_CONFIGS)} "
                "or the path of a .yaml config file"
            )
    else:
        sidecar = _sidecar_config(checkpoint, (".yaml", ".yml"))
        if sidecar is not None:
            return str(sidecar), sidecar
        name = sam2_config_name(checkpoint.name)
        if name is None:
            raise ModelLoadError(
                f"cannot tell the SAM 2 config from the file name {checkpoint.name!r}: put its config beside it "
                f"as {checkpoint.with_suffix('.yaml').name!r}, or name one of {', '.join(SAM2_CONFIGS)} with config=..."
            )
    version = name.split("_hiera_")[0]
    return name, configs_dir / version / f"{name}.yaml"


class OriginalSam2Segmenter:
    """SAM 2 from a released ``.pt`` checkpoint: boxes or clicks in, full-frame boolean masks out.

    Same interface as :class:`~.segmenter.Sam2ImageSegmenter`. The work is done
    by ``sam2``'s own ``SAM2ImagePredictor`` (resizing, prompt transforms, mask
    post-processing), as in the reference; the predictor keeps one image's
    features as state, so each call loads the embedding it is given into it.
    """

    name = "sam2-original"

    def __init__(self, model: torch.nn.Module, device: torch.device):
        sam2 = _import_sam2()
        self.model = model
        self.device = device
        self.predictor = sam2.SAM2ImagePredictor(model)
        # The predictor is stateful: one image (or batch) at a time.
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        config: str | Path | None = None,
    ) -> OriginalSam2Segmenter:
        """Load ``sam2.1_hiera_large.pt`` and the like.

        Args:
            checkpoint: a local SAM 2 / 2.1 checkpoint (``{"model": state_dict}``).
            device: where to run it.
            config: a ``sam2`` config name (``"sam2.1_hiera_l"``,
                ``"configs/sam2.1/sam2.1_hiera_l.yaml"``) or the path of a
                ``.yaml`` file; by default chosen from the checkpoint's file name.

        Raises:
            ModelLoadError: the file is missing or unreadable, the config is
                unknown or does not fit the file, or ``sam2`` is not installed.
        """
        file = _checkpoint_file(checkpoint)
        sam2 = _import_sam2()
        name, config_file = _sam2_config_file(file, config, sam2.configs)
        state = _read_state_dict(file)
        try:
            cfg = sam2.OmegaConf.load(config_file)
            sam2.OmegaConf.update(cfg, "model.sam_mask_decoder_extra_args", _SAM2_POSTPROCESSING, merge=True)
            sam2.OmegaConf.resolve(cfg)
            model = sam2.instantiate(cfg.model, _recursive_=True)
        except Exception as error:  # hydra and omegaconf raise their own types
            raise ModelLoadError(f"could not build SAM 2 from config {name!r}: {_first_line(error)}") from error
        _load_weights(model, state, file, name, strict=True)
        device = torch.device(device)
        return cls(model.to(device).eval(), device)

    def embed(self, images: Sequence[np.ndarray]) -> list[ImageEmbedding]:
        """Encode a batch of RGB ``uint8`` images in one forward pass."""
        if not images:
            return []
        with self._lock, inference_context(self.device):
            self.predictor.set_image_batch([np.ascontiguousarray(image) for image in images])
            features = self.predictor._features
            self.predictor.reset_predictor()
        # Highest resolution first, the image embedding last, one image per entry.
        levels = [*features["high_res_feats"], features["image_embed"]]
        return [
            ImageEmbedding([level[i : i + 1] for level in levels], image.shape[0], image.shape[1])
            for i, image in enumerate(images)
        ]

    def segment_boxes(
        self, embedding: ImageEmbedding, boxes: np.ndarray, compact: bool = False, defer: bool = False
    ) -> tuple[np.ndarray | sv.CompactMask, np.ndarray]:
        """One mask per pixel ``xyxy`` box: ``(N, H, W)`` bool masks and ``(N,)`` predicted IoU scores.

        With ``compact`` (or ``defer``, which the original predictor cannot: its masks
        come back full-frame) the masks are a ``supervision.CompactMask`` cropped to
        each mask's own extent, so no pixel is lost.
        """
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not len(boxes):
            masks, scores = np.zeros((0, embedding.height, embedding.width), bool), np.zeros((0,), np.float32)
        else:
            results = [
                self._predict(embedding, box=boxes[start : start + MAX_PROMPTS_PER_CALL])
                for start in range(0, len(boxes), MAX_PROMPTS_PER_CALL)
            ]
            masks, scores = np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])
        if compact or defer:
            extents = sv.mask_to_xyxy(masks) if len(masks) else np.zeros((0, 4))
            masks = sv.CompactMask.from_dense(masks, extents, (embedding.height, embedding.width))
        return masks, scores

    def segment_points(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray,
        labels: np.ndarray,
        box: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """One mask for one object from clicks (label 1 = positive, 0 = negative) and an optional box."""
        masks, scores = self.segment_prompt(embedding, points, labels, box)
        return masks[0], float(scores[0])

    def segment_prompt(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None = None,
        multimask: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks of one object from clicks and/or a box: ``(K, H, W)``, K = 3 with ``multimask``, else 1."""
        prompts = {}
        if points is not None and len(points):
            prompts["point_coords"] = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            prompts["point_labels"] = np.asarray(labels, dtype=np.int32).reshape(-1)
        if box is not None:
            prompts["box"] = np.asarray(box, dtype=np.float32).reshape(4)
        if not prompts:
            raise ValueError("segment_prompt needs points or a box")
        return self._predict(embedding, multimask=multimask, **prompts)

    def _predict(self, embedding: ImageEmbedding, multimask: bool = False, **prompts) -> tuple[np.ndarray, np.ndarray]:
        height, width = embedding.height, embedding.width
        *high_res, image_embed = embedding.features
        with self._lock, inference_context(self.device):
            # The state ``set_image`` leaves behind, for this one image.
            predictor = self.predictor
            predictor._features = {"image_embed": image_embed, "high_res_feats": high_res}
            predictor._orig_hw = [(height, width)]
            predictor._is_image_set, predictor._is_batch = True, False
            try:
                masks, scores, _ = predictor.predict(multimask_output=multimask, **prompts)
            finally:
                predictor.reset_predictor()
        # One prompt gives (K, H, W), several boxes give (N, 1, H, W): flattened to masks either way.
        return masks.reshape(-1, height, width).astype(bool), scores.reshape(-1).astype(np.float32)


# --------------------------------------------------------------------------- Grounding DINO


def groundingdino_config_name(name: str) -> str | None:
    """The ``groundingdino`` config for a checkpoint or config name; ``None`` if unknown.

    ``groundingdino_swint_ogc.pth`` -> ``GroundingDINO_SwinT_OGC``,
    ``groundingdino_swinb_cogcoor.pth`` -> ``GroundingDINO_SwinB_cfg``.
    """
    lowered = Path(name).name.lower().replace("-", "_")
    if "swint" in lowered or "swin_t" in lowered:
        return "GroundingDINO_SwinT_OGC"
    if "swinb" in lowered or "swin_b" in lowered:
        return "GroundingDINO_SwinB_cfg"
    return None


def _import_groundingdino() -> SimpleNamespace:
    try:
        with warnings.catch_warnings():
            # timm's old import path, used throughout the package: not ours to fix.
            warnings.filterwarnings("ignore", message="Importing from timm.models.layers", category=FutureWarning)
            import groundingdino
            import groundingdino.models.GroundingDINO.groundingdino as model_module
            from groundingdino.datasets import transforms
            from groundingdino.models import build_model
            from groundingdino.util.misc import clean_state_dict
            from groundingdino.util.slconfig import SLConfig
    except ImportError as error:
        raise _missing_package("original Grounding DINO (.pth)", "groundingdino", GROUNDINGDINO_EXTRA, error) from error
    return SimpleNamespace(
        configs=Path(groundingdino.__file__).parent / "config",
        transforms=transforms,
        model_module=model_module,
        build_model=build_model,
        clean_state_dict=clean_state_dict,
        SLConfig=SLConfig,
    )


def _groundingdino_config_file(checkpoint: Path, config: str | Path | None, configs_dir: Path) -> tuple[str, Path]:
    if config is not None:
        path = Path(config).expanduser()
        if path.suffix == ".py" and path.is_file():
            return str(path), path
        name = groundingdino_config_name(str(config))
        if name is None:
            raise ModelLoadError(
                f"Grounding DINO config {str(config)!r} is unknown: use one of {', '.join(GROUNDINGDINO_CONFIGS)} "
                "or the path of a .py config file"
            )
    else:
        sidecar = _sidecar_config(checkpoint, (".py",))
        if sidecar is not None:
            return str(sidecar), sidecar
        name = groundingdino_config_name(checkpoint.name)
        if name is None:
            raise ModelLoadError(
                f"cannot tell the Grounding DINO config from the file name {checkpoint.name!r}: put its config "
                f"beside it as {checkpoint.with_suffix('.py').name!r}, or name one of "
                f"{', '.join(GROUNDINGDINO_CONFIGS)} with config=..."
            )
    return name, configs_dir / f"{name}.py"


class _BertForGroundingDino(torch.nn.Module):
    """Grounding DINO's text encoder: a BERT that takes a per-token ``(B, L, L)`` attention mask.

    Replaces the package's ``BertModelWarper``, which calls ``BertModel``
    helpers that ``transformers`` 5 removed (``get_extended_attention_mask``,
    ``get_head_mask``). Keeps its submodule names, so the checkpoints'
    ``bert.*`` weights load unchanged, and computes the same thing: embeddings,
    then the encoder layers under an additive mask.
    """

    def __init__(self, bert_model: torch.nn.Module):
        super().__init__()
        self.config = bert_model.config
        self.embeddings = bert_model.embeddings
        self.encoder = bert_model.encoder
        self.pooler = bert_model.pooler

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.dim() == 2:  # padding mask: every token sees every real token
            attention_mask = attention_mask[:, None, :].expand(-1, input_ids.shape[1], -1)
        # (B, 1, L, L): 0 where a token may attend, the dtype's minimum where not.
        bias = (1.0 - attention_mask[:, None].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        return {"last_hidden_state": self.encoder(hidden, attention_mask=bias).last_hidden_state}


@contextlib.contextmanager
def _bert_for_groundingdino(model_module: ModuleType) -> Iterator[None]:
    """While building, have ``GroundingDINO.__init__`` wrap its BERT in :class:`_BertForGroundingDino`."""
    original = model_module.BertModelWarper
    model_module.BertModelWarper = _BertForGroundingDino
    try:
        yield
    finally:
        model_module.BertModelWarper = original


class OriginalGroundingDinoDetector:
    """Text-prompted detection with a released Grounding DINO ``.pth`` checkpoint.

    Same interface and labelling as :class:`~.detectors.grounding_dino.GroundingDinoDetector`:
    boxes are mapped back to the prompt's phrases token by token, so every label
    is a phrase the user typed. Images are preprocessed as in the reference
    (shorter side 800, longer side at most 1333); images that come out the same
    size share one forward pass, others run alone, so no image is padded and
    results match running them one by one.
    """

    name = "groundingdino-original"
    requires_prompt = True
    produces_masks = False

    # The transformers backend's phrase mapping only needs a fast BERT tokenizer
    # (``self.processor.tokenizer``) and ``self.max_text_len``: share it.
    token_phrase_map = GroundingDinoDetector.token_phrase_map
    validate_phrases = GroundingDinoDetector.validate_phrases

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device,
        resize: int = GROUNDINGDINO_RESIZE,
        max_size: int = GROUNDINGDINO_MAX_SIZE,
    ):
        groundingdino = _import_groundingdino()
        T = groundingdino.transforms
        self.model = model
        self.device = device
        self.processor = SimpleNamespace(tokenizer=model.tokenizer)
        self.max_text_len = int(model.max_text_len)
        self.transform = T.Compose(
            [T.RandomResize([resize], max_size=max_size), T.ToTensor(), T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)]
        )
        # The model keeps the current image's backbone features as attributes during a forward pass.
        self._lock = threading.Lock()

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        config: str | Path | None = None,
        text_encoder: str | None = None,
    ) -> OriginalGroundingDinoDetector:
        """Load ``groundingdino_swint_ogc.pth`` or ``groundingdino_swinb_cogcoor.pth``.

        Args:
            checkpoint: a local Grounding DINO checkpoint (``{"model": state_dict}``).
            device: where to run it.
            config: ``"GroundingDINO_SwinT_OGC"``, ``"GroundingDINO_SwinB_cfg"``
                (or ``"swint"``, ``"swinb"``), or the path of a ``.py`` config
                file; by default chosen from the checkpoint's file name.
            text_encoder: the BERT the model's text side is built from: a hub id
                or a local folder with a BERT model and tokenizer. Defaults to the
                config's ``text_encoder_type`` (``"bert-base-uncased"``, from the
                hub). The checkpoint overwrites its weights; the tokenizer is used as is.

        Raises:
            ModelLoadError: the file is missing or unreadable, the config is
                unknown or does not fit the file, the text encoder cannot be
                loaded, or ``groundingdino`` is not installed.
        """
        file = _checkpoint_file(checkpoint)
        groundingdino = _import_groundingdino()
        name, config_file = _groundingdino_config_file(file, config, groundingdino.configs)
        state = _read_state_dict(file)
        try:
            args = groundingdino.SLConfig.fromfile(str(config_file))
        except Exception as error:  # SLConfig executes the config file
            raise ModelLoadError(f"could not read Grounding DINO config {name!r}: {_first_line(error)}") from error
        if text_encoder is not None:
            args.text_encoder_type = str(text_encoder)
        args.device = str(device)
        # Gradient checkpointing is for training; at inference it only adds torch.utils.checkpoint calls.
        args.use_checkpoint = False
        args.use_transformer_ckpt = False
        try:
            with (
                _BUILD_LOCK,
                _bert_for_groundingdino(groundingdino.model_module),
                # The package prints the text encoder it loads: keep stdout for the CLI's output.
                contextlib.redirect_stdout(sys.stderr),
                warnings.catch_warnings(),
            ):
                warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
                model = groundingdino.build_model(args)
        except OSError as error:  # the text encoder could not be found or downloaded
            raise ModelLoadError(
                f"could not load Grounding DINO's text encoder {args.text_encoder_type!r}: "
                f"{_first_line(error).rstrip('.')}; "
                "pass text_encoder= a local folder holding a BERT model and its tokenizer"
            ) from error
        except Exception as error:
            raise ModelLoadError(
                f"could not build Grounding DINO from config {name!r}: {_first_line(error)}"
            ) from error
        _load_weights(model, groundingdino.clean_state_dict(state), file, name, strict=False)
        device = torch.device(device)
        return cls(model.to(device).eval(), device)

    def detect(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
    ) -> list[sv.Detections]:
        if not images:
            return []
        token_phrase = self.token_phrase_map(phrases)
        caption = prompt_text(phrases)
        tensors = [self.transform(Image.fromarray(image).convert("RGB"), None)[0] for image in images]
        same_size: dict[tuple[int, ...], list[int]] = {}
        for index, tensor in enumerate(tensors):
            same_size.setdefault(tuple(tensor.shape), []).append(index)

        results: list[sv.Detections | None] = [None] * len(images)
        for indices in same_size.values():
            batch = torch.stack([tensors[i] for i in indices]).to(self.device)
            # float32, no autocast: the reference runs Grounding DINO at full precision.
            with self._lock, torch.inference_mode():
                outputs = self.model(batch, captions=[caption] * len(indices))
            # Logits are padded to max_text_len; keep the prompt's tokens.
            token_probs = outputs["pred_logits"][:, :, : len(token_phrase)].float().sigmoid().cpu().numpy()
            boxes = outputs["pred_boxes"].float().cpu().numpy()
            for row, index in enumerate(indices):
                results[index] = select_detections(
                    token_probs[row],
                    boxes[row],
                    token_phrase,
                    phrases,
                    images[index].shape[:2],
                    box_threshold,
                    text_threshold,
                )
        return results
