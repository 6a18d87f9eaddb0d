"""MM-Grounding-DINO (detector) and EdgeTAM (video tracker): each one file and one registry entry.

Both load through the project's real loaders from tiny random checkpoints of
their transformers classes (tests/make_tiny_models.py), by name wherever a
detector or tracker is named: ``load_detector`` / ``load_tracker``, a
:class:`~gsam2.core.run.Run` built from a :class:`~gsam2.core.spec.RunSpec`,
and the CLI. Outputs are random; what is checked is their form.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from gsam2.core import rle_to_mask
from gsam2.core.errors import ModelLoadError
from gsam2.core.backends import load_detector, load_tracker, parse_detector_spec, parse_tracker_spec
from gsam2.core.run import Run
from gsam2.core.spec import RunSpec
from gsam2.core.video_io import iter_frames

from .conftest import shapes_image
from .media import moving_squares, write_video

PHRASES = ["car", "person", "red square"]


def check_detections(found: sv.Detections, image: np.ndarray, phrases: list[str]) -> None:
    height, width = image.shape[:2]
    assert found.xyxy.shape == (len(found), 4) and found.xyxy.dtype == np.float32
    assert (found.xyxy[:, 0] >= 0).all() and (found.xyxy[:, 2] <= width).all()
    assert (found.xyxy[:, 1] >= 0).all() and (found.xyxy[:, 3] <= height).all()
    assert (found.xyxy[:, :2] <= found.xyxy[:, 2:]).all()
    assert ((0 <= found.confidence) & (found.confidence <= 1)).all()
    assert ((0 <= found.class_id) & (found.class_id < len(phrases))).all()
    assert [phrases[i] for i in found.class_id] == list(found.data["class_name"])


# ---------------------------------------------------------------- names


def test_the_backends_are_named_like_the_others():
    assert parse_detector_spec("mm-grounding-dino") == (
        "mm-grounding-dino", "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det"
    )
    assert parse_detector_spec("MM-Grounding-DINO:some/folder/") == ("mm-grounding-dino", "some/folder/")
    assert parse_tracker_spec("edgetam") == ("edgetam", "yonigozlan/EdgeTAM-hf")
    assert parse_tracker_spec("edgetam:/models/edgetam") == ("edgetam", "/models/edgetam")


def test_help_texts_list_both(capsys, monkeypatch):
    from gsam2.cli import main

    monkeypatch.setenv("COLUMNS", "2000")  # argparse would wrap "mm-grounding-dino" at a hyphen
    for command in ("image", "video"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "mm-grounding-dino" in help_text
    assert "edgetam" in help_text  # --tracker, on gsam2 video


# ---------------------------------------------------------------- MM-Grounding-DINO


def test_mm_grounding_dino_detects_well_formed_boxes(tiny_models):
    from gsam2.core.detectors.mm_grounding_dino import MMGroundingDinoDetector

    detector = load_detector(f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}", device="cpu")
    assert isinstance(detector, MMGroundingDinoDetector) and detector.name == "mm-grounding-dino"
    assert type(detector.model).__name__ == "MMGroundingDinoForObjectDetection"
    images = [shapes_image(120, 160), shapes_image(90, 70, seed=1)]
    found = detector.detect(images, PHRASES, box_threshold=0.0, text_threshold=0.0)
    assert len(found) == 2
    for detections, image in zip(found, images):
        assert len(detections) > 0  # the tiny model's 20 queries all pass thresholds of 0
        check_detections(detections, image, PHRASES)
    assert all(len(d) == 0 for d in detector.detect(images, PHRASES, box_threshold=1.0, text_threshold=0.0))


def test_mm_grounding_dino_labels_images_through_a_run(tiny_models):
    spec = RunSpec.build(
        detector=f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}",
        segmenter=str(tiny_models["sam2"]),
        prompt="car. person.",
        box_threshold=0.0,
        text_threshold=0.0,
        device="cpu",
    )
    run = Run(spec).load_for_images()
    images = [shapes_image(120, 160), shapes_image(96, 80, seed=2)]
    results = run.label_images(images, compact_masks=False)
    for detections, image in zip(results, images):
        assert len(detections) > 0
        check_detections(detections, image, ["car", "person"])
        assert detections.mask.shape == (len(detections), *image.shape[:2]) and detections.mask.dtype == bool


# ---------------------------------------------------------------- wrong architectures


@pytest.mark.parametrize(
    ("load", "spec", "message"),
    [
        (load_detector, "mm-grounding-dino:{grounding-dino}", "a grounding-dino checkpoint, not MM-Grounding-DINO"),
        (load_detector, "{mm-grounding-dino}", "a mm-grounding-dino checkpoint, not Grounding DINO"),
        (load_tracker, "edgetam:{sam2-video}", "a sam2_video checkpoint, not an EdgeTAM video checkpoint"),
        (load_tracker, "edgetam:{mm-grounding-dino}", "a mm-grounding-dino checkpoint, not an EdgeTAM video"),
        (load_tracker, "{edgetam-video}", "a edgetam_video checkpoint, not a SAM 2 video checkpoint"),
    ],
)
def test_the_wrong_architecture_is_refused_in_one_line(tiny_models, load, spec, message):
    # transformers itself would load each of these with warnings only: weights newly initialised or dropped.
    with pytest.raises(ModelLoadError) as error:
        load(spec.format_map({name: str(path) for name, path in tiny_models.items()}), device="cpu")
    assert message in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- EdgeTAM


def test_edgetam_without_timm_is_a_one_line_load_error(tiny_models, monkeypatch):
    import gsam2.core.edgetam_video as edgetam_video

    class NeedsTimm:
        @classmethod
        def from_pretrained(cls, checkpoint):
            raise ImportError("\nTimmWrapperModel requires the timm library but it was not found.\nPlease install it.")

    monkeypatch.setattr(edgetam_video, "_edgetam_video_model_class", lambda: NeedsTimm)
    with pytest.raises(ModelLoadError) as error:  # a trailing slash: not the loaded model's cache key
        load_tracker(f"edgetam:{tiny_models['edgetam-video']}/", device="cpu")
    assert "requires the timm library" in str(error.value) and "gsam2[edgetam]" in str(error.value)
    assert "\n" not in str(error.value)




@pytest.fixture(scope="module")
def edgetam(tiny_models):
    return load_tracker(f"edgetam:{tiny_models['edgetam-video']}", device="cpu")


def prompt(session, frame_index, object_ids, prompt_type, height, width):
    boxes = np.array([[10, 8, 40, 30], [50, 30, 90, 60]][: len(object_ids)], dtype=np.float32)
    if prompt_type == "box":
        session.prompt(frame_index, object_ids, boxes=boxes)
    elif prompt_type == "mask":
        masks = np.zeros((len(object_ids), height, width), bool)
        for mask, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
            mask[y1:y2, x1:x2] = True
        session.prompt(frame_index, object_ids, masks=masks)
    else:
        session.prompt(frame_index, object_ids, points=(boxes[:, None, :2] + boxes[:, None, 2:]) / 2)


@pytest.mark.parametrize("prompt_type", ["mask", "box", "point"])
def test_edgetam_follows_each_prompt_type_and_objects_added_later(edgetam, prompt_type):
    """One object from frame 0, a second prompted on frame 2 while the first is followed (that frame re-run).

    With mask prompts this is the frame transformers' EdgeTamVideoModel cannot score as shipped
    (core/edgetam_video.py): a mask-prompted object beside a tracked one.
    """
    from gsam2.core.edgetam_video import EdgeTamVideoTracker

    assert isinstance(edgetam, EdgeTamVideoTracker)
    frames = list(moving_squares(5, 64, 96))
    session = edgetam.start()
    prompt(session, 0, [1], prompt_type, 64, 96)
    tracked = session.step(0, frames[0])
    for index, frame in enumerate(frames[1:], start=1):
        tracked = session.step(index, frame)
        if index == 2:
            prompt(session, 2, [2], prompt_type, 64, 96)
            tracked = session.step(2)  # the frame again, with the new object
        assert tracked.frame_index == index
        assert tracked.object_ids == ([1] if index < 2 else [1, 2])
        assert tracked.masks.shape == (len(tracked.object_ids), 64, 96) and tracked.masks.dtype == bool
        assert tracked.scores.shape == (len(tracked.object_ids),)
    session.remove([1])
    assert session.step(5, frames[0]).object_ids == [2]


def test_edgetam_memory_is_pruned_and_frames_can_share_one_encoding(edgetam):
    frames = list(moving_squares(12, 32, 48))
    first, second = edgetam.start(keep_pixel_frames=0), edgetam.start(keep_pixel_frames=0)
    first.prompt(0, [1], boxes=np.array([[4, 8, 20, 24]]))
    second.prompt(0, [7], boxes=np.array([[8, 4, 30, 20]]))
    for index, frame in enumerate(frames):
        encoded = edgetam.encode(frame)  # as the CVAT tracker does: one encoder pass for every session
        assert first.step(index, encoded=encoded).masks.shape == (1, 32, 48)
        assert second.step(index, encoded=encoded).object_ids == [7]
    # Only what EdgeTAM can still attend to is kept: memories of the last `history` frames and this one.
    outputs = first.session.output_dict_per_obj[0]
    assert sorted(outputs["cond_frame_outputs"]) == [0]
    assert len(outputs["non_cond_frame_outputs"]) <= first.history + 1 < len(frames)
    assert len(first.session.processed_frames) == len(frames) and not dict(first.session.processed_frames)


def threshold_finding(detector, frame, phrases, count: int) -> float:
    """A box threshold at which ``detector`` finds ``count`` objects in ``frame`` (the tiny models score at random)."""
    [found] = detector.detect([frame], phrases, 0.0, 0.0)
    scores = np.sort(found.confidence)[::-1]
    return float(scores[count - 1] + scores[count]) / 2


def test_edgetam_tracks_through_a_run_with_stable_ids(tiny_models):
    """Both new backends in one run: MM-Grounding-DINO detects every 3 frames, EdgeTAM follows (mask prompts)."""
    detector = f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}"
    frames = list(moving_squares(7))
    threshold = threshold_finding(load_detector(detector, device="cpu"), frames[0], ["red square", "car"], 2)
    spec = RunSpec.build(
        detector=detector,
        segmenter=str(tiny_models["sam2"]),
        tracker=f"edgetam:{tiny_models['edgetam-video']}",
        prompt="red square. car.",
        box_threshold=threshold,
        text_threshold=0.0,
        step=3,
        device="cpu",
    )
    run = Run(spec).load_for_video()
    assert type(run.video_tracker).__name__ == "EdgeTamVideoTracker"
    results = list(run.track(enumerate(frames)))
    assert [result.frame_index for result in results] == list(range(7))
    classes: dict[int, str] = {}
    for result in results:
        detections = result.detections
        assert detections.mask.shape == (len(detections), 64, 96) and detections.mask.dtype == bool
        ids = detections.tracker_id.tolist()
        assert len(ids) == len(set(ids)), "one entry per object per frame"
        if result.frame_index < 3:
            assert set(ids) <= {1, 2}, "until the next keyframe only the first keyframe's two objects exist"
        for object_id, name in zip(ids, detections.data["class_name"]):
            assert classes.setdefault(object_id, name) == name, "an id keeps its class"
    assert set(results[0].detections.tracker_id.tolist()) == {1, 2}, "mask-prompted objects show on their keyframe"


# ---------------------------------------------------------------- the CLI


def test_gsam2_image_with_mm_grounding_dino(tmp_path, tiny_models, capsys):
    from gsam2.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for index, (height, width) in enumerate([(120, 160), (96, 80)]):
        Image.fromarray(shapes_image(height, width, seed=index)).save(folder / f"image{index}.png")
    output = tmp_path / "out"
    code = main(["image", "--prompt", "car. person.", "--input", str(folder), "--output", str(output),
                 "--detector", f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}",
                 "--segmenter", str(tiny_models["sam2"]), "--device", "cpu", "--quiet",
                 "--box-threshold", "0", "--text-threshold", "0"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(path.read_text()) for path in sorted(output.glob("*.json"))]
    assert len(records) == 2
    for record in records:
        assert record["annotations"]
        for annotation in record["annotations"]:
            assert annotation["class_name"] in {"car", "person"}
            assert rle_to_mask(annotation["segmentation"]).shape == (record["img_height"], record["img_width"])


def test_gsam2_video_with_edgetam(tmp_path, tiny_models, capsys):
    from gsam2.cli import main

    detector = f"mm-grounding-dino:{tiny_models['mm-grounding-dino']}"
    frames = list(moving_squares(8))
    threshold = threshold_finding(load_detector(detector, device="cpu"), frames[0], ["red square", "car"], 2)
    video = write_video(tmp_path / "clip.mp4", frames, codec="mpeg4", pix_fmt="yuv420p")
    out = tmp_path / "out"
    code = main(["video", "--prompt", "red square. car.", "--input", str(video), "--output", str(out),
                 "--detector", detector, "--segmenter", str(tiny_models["sam2"]),
                 "--tracker", f"edgetam:{tiny_models['edgetam-video']}", "--device", "cpu", "--quiet",
                 "--box-threshold", f"{threshold:.6f}", "--text-threshold", "0", "--step", "4"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "frames processed: 8" in captured.out
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(8))
    assert lines[0]["objects"], "the keyframe's mask-prompted objects"
    for line in lines:
        for obj in line["objects"]:
            assert obj["class_name"] in {"red square", "car"}
            assert rle_to_mask(obj["segmentation"]).shape == (64, 96)
    assert len(list(iter_frames(out / "clip.mp4"))) == 8
