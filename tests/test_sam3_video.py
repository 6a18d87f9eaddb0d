"""SAM 3 as a video tracker: a text prompt straight to tracked masks, through core, the CLI and the operator.

The tiny ``Sam3VideoModel`` (``tests/tiny_sam3.py``) has random weights: its
tracker loses every object right away, so each detection becomes a new object.
That is enough to test the plumbing, ids, labels, thresholds, track ends and
bounded memory, not what SAM 3 finds.
"""

from __future__ import annotations

import json

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
import supervision as sv
from fiftyone.operators.delegated import DelegatedOperationService

from gsam2.core import InputError, ModelLoadError, rle_to_mask
from gsam2.core.backends import load_sam3_tracker, load_tracker, parse_sam3_tracker_spec
from gsam2.core.video_io import iter_frames

from .app_runs import expect_user_error, run_in_app
from .media import moving_squares, write_video
from .test_cli import gsam2

FRAMES = 6
TRACK = "@gsam2/grounded-sam2/track_video"


@pytest.fixture
def sam3(tiny_models):
    return load_sam3_tracker(f"sam3:{tiny_models['sam3-video']}", device="cpu")


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "squares.mp4", moving_squares(FRAMES))


def frames(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(count)]


# ---------------------------------------------------------------- core


def test_tracker_names_are_parsed():
    assert parse_sam3_tracker_spec("sam3") == "facebook/sam3"
    assert parse_sam3_tracker_spec(" SAM3:/models/sam3 ") == "/models/sam3"
    assert parse_sam3_tracker_spec("sam3:") == "facebook/sam3"
    assert parse_sam3_tracker_spec("facebook/sam2.1-hiera-tiny") is None
    assert parse_sam3_tracker_spec("sam3-finetune") is None


def test_tracks_a_decoded_video_frame_by_frame(sam3, video):
    results = list(sam3.track(iter_frames(str(video), stride=2), ["red square", "green square"]))
    assert [result.frame_index for result in results] == [0, 2, 4]
    seen = 0
    for result in results:
        detections = result.detections
        assert detections.mask.shape[1:] == (64, 96)
        assert np.array_equal(detections.xyxy, sv.mask_to_xyxy(detections.mask).astype(np.float32))
        assert all(mask.any() for mask in detections.mask)
        assert set(detections.data["class_name"]) <= {"red square", "green square"}
        for name, class_id in zip(detections.data["class_name"], detections.class_id):
            assert ["red square", "green square"][class_id] == name
        assert len(set(detections.tracker_id.tolist())) == len(detections), "one id per object on a frame"
        assert (detections.tracker_id >= 1).all(), "ids start at 1, as in the SAM 2 pipeline"
        seen += len(detections)
    assert seen > 0


def test_an_ended_track_never_comes_back_and_ids_are_not_reused(sam3):
    last_seen: dict[int, int] = {}
    session = sam3.start(["car"], end_after=2)
    for position, frame in enumerate(frames(8)):
        ids = session.step(frame).tracker_id.tolist()
        for object_id in ids:
            if object_id in last_seen:
                assert position - last_seen[object_id] <= 2, f"id {object_id} came back after its track ended"
            last_seen[object_id] = position
        # Objects unseen for end_after frames leave SAM 3's state, so the work per frame stays bounded.
        assert len(session.session.obj_ids) <= 2 * 3  # two queries per frame, kept for at most end_after + 1 frames
    assert len(last_seen) > 2


def test_memory_stays_bounded_however_long_the_video(sam3):
    session = sam3.start(["car"], end_after=50)
    history, kept_conditioning = session.history, session.conditioning_frames
    for position, frame in enumerate(frames(history + 2)):
        session.step(frame)
        state = session.session
        assert list(state.processed_frames) == [position], "only the current frame is kept"
        for outputs in state.output_dict_per_obj.values():
            assert all(index >= position - history for index in outputs["non_cond_frame_outputs"])
            assert len(outputs["cond_frame_outputs"]) <= max(kept_conditioning, 1) + history
        assert all(index >= position - history for index in state.obj_id_to_tracker_score_frame_wise)
        assert all(index >= position - history for index in state.suppressed_obj_ids)
    # Objects were tracked across more frames than the window, so memories really were dropped.
    assert position >= history and state.get_obj_num() > 0


def test_score_threshold_hides_low_scores(sam3):
    shown = [len(result.detections) for result in sam3.track(enumerate(frames(2)), ["car"], score_threshold=0.0)]
    hidden = [len(result.detections) for result in sam3.track(enumerate(frames(2)), ["car"], score_threshold=0.99)]
    assert sum(shown) > 0 and sum(hidden) == 0


@pytest.mark.parametrize(
    ("phrases", "problem"),
    [([], "at least one"), (["car", "  "], "at least one"), (["car " * 40], "tokens long")],
)
def test_bad_phrases_fail_before_any_frame_is_read(sam3, phrases, problem):
    def no_frames():
        raise AssertionError("a frame was read")
        yield

    with pytest.raises(InputError, match=problem):
        sam3.track(no_frames(), phrases)


def test_end_after_must_be_positive(sam3):
    with pytest.raises(InputError, match="end_after 0"):
        sam3.start(["car"], end_after=0)


def test_sam3_is_not_a_box_tracker():
    with pytest.raises(ModelLoadError, match="SAM 3, which finds and follows what a text prompt names by itself"):
        load_tracker("sam3")


def test_missing_sam3_checkpoint_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="tracker checkpoint .*missing': no such file or folder"):
        load_sam3_tracker(f"sam3:{tmp_path / 'missing'}", device="cpu")


# ---------------------------------------------------------------- CLI


def test_cli_tracks_with_sam3_alone(tmp_path, tiny_models, video):
    output = tmp_path / "out"
    result = gsam2("video", "--tracker", f"sam3:{tiny_models['sam3-video']}", "--prompt", "red square.",
                   "--input", str(video), "--output", str(output), "--box-threshold", "0", "--device", "cpu",
                   "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (output / "squares.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(FRAMES))
    objects = [obj for line in lines for obj in line["objects"]]
    assert objects and {obj["class_name"] for obj in objects} == {"red square"}
    assert all(rle_to_mask(obj["segmentation"]).shape == (64, 96) for obj in objects)
    assert (output / "squares.mp4").stat().st_size > 0
    assert f"frames processed: {FRAMES}" in result.stdout


@pytest.mark.parametrize("options", [["--detector", "owlv2"], ["--slice-size", "64"], ["--reverse"]])
def test_cli_refuses_detector_options_with_sam3(tmp_path, tiny_models, video, options):
    result = gsam2("video", "--tracker", f"sam3:{tiny_models['sam3-video']}", "--prompt", "car",
                   "--input", str(video), "--output", str(tmp_path / "out"), "--device", "cpu", *options)
    assert result.returncode == 2
    assert "a SAM 3 tracker detects and tracks by itself" in result.stderr
    assert options[0] in result.stderr
    assert not (tmp_path / "out").exists(), "nothing written"


def test_cli_empty_prompt_with_sam3_is_a_usage_error(tmp_path, tiny_models, video):
    result = gsam2("video", "--tracker", f"sam3:{tiny_models['sam3-video']}", "--prompt", " . ",
                   "--input", str(video), "--output", str(tmp_path / "out"), "--device", "cpu")
    assert result.returncode == 2 and "prompt" in result.stderr.lower()


# ---------------------------------------------------------------- FiftyOne operator


@pytest.fixture
def video_dataset(video):
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=str(video)))
    yield dataset
    DelegatedOperationService().delete_for_dataset(dataset._doc.id)
    dataset.delete()


def test_track_video_operator_with_sam3_delegated(video_dataset, tiny_models):
    params = {"prompt": "red square. green square.", "tracker": f"sam3:{tiny_models['sam3-video']}",
              "detector": "/no/detector/needed", "segmenter": "/no/sam2/needed", "device": "cpu",
              "box_threshold": 0.0, "label_field": "sam3_tracks"}
    queued = foo.execute_operator(TRACK, {"view": video_dataset.view(), "params": params}, request_delegation=True)
    assert queued.delegated
    [done] = DelegatedOperationService().execute_queued_operations(dataset_name=video_dataset.name)
    assert done.error is None, done.error
    assert done.result["processed"] == 1 and done.result["objects"] > 0
    sample = video_dataset.first()
    assert sorted(sample.frames.keys()) == list(range(1, FRAMES + 1))
    labels = [det for frame in sample.frames.values() for det in frame["sam3_tracks"].detections]
    assert labels and {det.label for det in labels} <= {"red square", "green square"}
    assert all(isinstance(det.index, int) and det.index >= 1 for det in labels)


def test_track_video_operator_refuses_sam3_for_boxes(video_dataset, tiny_models):
    video_dataset.add_frame_field("keyframes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    params = {"mode": "field", "source_field": "keyframes", "tracker": f"sam3:{tiny_models['sam3-video']}",
              "device": "cpu", "label_field": "tracks"}
    expect_user_error(run_in_app(TRACK, video_dataset.view(), params), "is SAM 3, which finds and follows what a text prompt names")
    assert "tracks" not in video_dataset.get_frame_field_schema(), "nothing written"
