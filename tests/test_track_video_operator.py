"""The track_video operator on a real FiftyOne video dataset."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService

from . import app_runs
from .app_runs import expect_user_error
from .media import moving_squares, write_video

TRACK = "@gsam2/grounded-sam2/track_video"
FRAMES = 10


@pytest.fixture
def videos(tmp_path):
    paths = [
        write_video(tmp_path / "a.mp4", moving_squares(FRAMES)),
        write_video(tmp_path / "b.mkv", moving_squares(FRAMES), codec="ffv1", pix_fmt="bgr0"),
    ]
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(path)) for path in paths])
    yield dataset
    DelegatedOperationService().delete_for_dataset(dataset._doc.id)
    dataset.delete()


@pytest.fixture
def params(tiny_models):
    return {
        "detector": str(tiny_models["grounding-dino"]),
        "segmenter": str(tiny_models["sam2"]),
        "tracker": str(tiny_models["sam2-video"]),
        "device": "cpu",
        "prompt": "red square",
        "box_threshold": 0.7,
        "text_threshold": 0.0,
        "step": 5,
        "label_field": "tracks",
    }


def run(dataset, params, delegate=False):
    return app_runs.run(TRACK, dataset, params, delegate)


def check_tracks(dataset, field="tracks"):
    total = 0
    for sample in dataset:
        assert len(sample.frames) == FRAMES, "every frame document exists, 1-based"
        assert sorted(sample.frames.keys()) == list(range(1, FRAMES + 1))
        for frame in sample.frames.values():
            for detection in frame[field].detections:
                assert isinstance(detection.index, int) and detection.index >= 1
                x, y, w, h = detection.bounding_box
                assert 0 <= x and 0 <= y and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
                assert detection.mask.shape == (round(h * 64), round(w * 96))
                total += 1
    return total


def test_track_video_immediate(videos, params):
    result = run(videos, params)
    assert result.result["processed"] == 2 and result.result["failed_count"] == 0
    assert videos.get_frame_field_schema()["tracks"].document_type is fo.Detections
    assert check_tracks(videos) > 0
    first = check_tracks(videos)
    run(videos, params)  # a re-run replaces
    assert check_tracks(videos) == first
    trajectories = videos.to_trajectories("frames.tracks")
    assert len(trajectories) > 0


def test_track_video_delegated(videos, params):
    queued = run(videos, params, delegate=True)
    assert queued.delegated
    [done] = DelegatedOperationService().execute_queued_operations(dataset_name=videos.name)
    assert done.error is None, done.error
    assert done.result["processed"] == 2
    assert check_tracks(videos) > 0


def test_track_from_annotated_key_frames(videos, params):
    sample = videos.first()
    sample.frames[3]["keys"] = fo.Detections(
        detections=[fo.Detection(label="bus", bounding_box=[0.05, 0.1, 0.2, 0.3], index=7)]
    )
    sample.save()
    keyed = {
        "mode": "field",
        "source_field": "keys",
        "label_field": "followed",
        "tracker": params["tracker"],
        "device": "cpu",
    }
    result = run(videos.select(sample.id), keyed)
    assert result.result["processed"] == 1
    sample = videos[sample.id]
    labels = {(d.label, d.index) for f in sample.frames.values() if f["followed"] for d in f["followed"].detections}
    assert labels <= {("bus", 7)}
    assert sample.frames[1]["followed"].detections == [], "nothing before the key frame"


def test_undecodable_video_is_skipped_and_recorded(videos, params, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    videos.add_sample(fo.Sample(filepath=str(broken)))
    result = run(videos, params)
    assert result.result["processed"] == 2 and result.result["failed_count"] == 1
    assert "not a video" in videos.match(fo.ViewField("filepath") == str(broken)).first()["tracks_error"]


def test_empty_prompt_and_image_dataset_are_refused(videos, params, tmp_path):
    expect_user_error(run(videos, dict(params, prompt=" ")), "empty")
    images = fo.Dataset()
    try:
        images.add_sample(fo.Sample(filepath=str(Path(tmp_path) / "x.png")))
        expect_user_error(run(images, params), "holds images: this operator labels videos")
    finally:
        images.delete()


def plugin_module():
    """track_video as FiftyOne loaded it (the plugin's own module, not gsam2.operators.track_video)."""
    import sys

    return sys.modules[type(foo.get_operator(TRACK)).__module__]


def test_long_videos_are_written_in_bounded_batches(videos, params, monkeypatch):
    module = plugin_module()
    monkeypatch.setattr(module, "FRAMES_PER_WRITE", 4)
    batches = []
    real_flush = module.FrameLabelWriter.flush

    def flush(self):
        batches.append(len(self.pending))
        real_flush(self)

    monkeypatch.setattr(module.FrameLabelWriter, "flush", flush)
    result = run(videos, params)
    assert result.result["processed"] == 2
    assert batches == [4, 4, 2] * 2, "10 frames a video, at most 4 held at a time"
    assert check_tracks(videos) > 0


def test_a_video_failing_midway_keeps_no_partial_tracks(videos, params, monkeypatch):
    module = plugin_module()
    monkeypatch.setattr(module, "FRAMES_PER_WRITE", 3)
    real_iter = module.iter_frames

    def failing_after_six(path, *args, **kwargs):
        for index, frame in enumerate(real_iter(path, *args, **kwargs)):
            if index == 6 and path.endswith("b.mkv"):
                raise module.InputError(f"{path}: decoding failed at frame 6")
            yield frame

    monkeypatch.setattr(module, "iter_frames", failing_after_six)
    result = run(videos, params)
    assert result.result["processed"] == 1 and result.result["failed_count"] == 1
    a, b = videos.sort_by("filepath")
    assert all(frame["tracks"] is not None for frame in a.frames.values())
    assert all(frame["tracks"] is None for frame in b.frames.values()), "the failed video holds no half of its tracks"
    assert "decoding failed at frame 6" in b["tracks_error"]


def test_a_portrait_phone_video_is_tracked_upright(tmp_path, params):
    """Rotation 90 in the display matrix: masks and boxes in the orientation the App's player shows."""
    path = write_video(tmp_path / "portrait.mp4", moving_squares(FRAMES), rotation=90)
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=str(path)))
    try:
        result = run(dataset, {**params, "box_threshold": 0.0})
        assert result.result["processed"] == 1
        found = 0
        for frame in dataset.first().frames.values():
            for detection in frame["tracks"].detections:
                x, y, w, h = detection.bounding_box
                # displayed 64 wide and 96 high (coded 96x64, turned a quarter)
                assert detection.mask.shape == (round(h * 96), round(w * 64))
                found += 1
        assert found > 0
    finally:
        dataset.delete()


def test_key_frame_mode_says_what_is_missing_and_preselects_a_field(videos):
    from fiftyone.operators.executor import ExecutionContext

    def form(params):
        ctx = ExecutionContext(request_params={"dataset_name": videos.name, "params": params})
        return foo.get_operator(TRACK).resolve_input(ctx).type.properties

    missing = form({"mode": "field"})
    assert "source_field" not in missing
    assert (
        missing["source_error"].invalid and "no frame-level Detections field" in missing["source_error"].error_message
    )
    videos.add_frame_field("keyframes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    present = form({"mode": "field"})
    assert present["source_field"].default == "keyframes" and "source_error" not in present
    sam3 = form({"tracker": "sam3"})
    assert "detector" not in sam3 and "segmenter" not in sam3 and "prompt" in sam3


def context(dataset, params):
    from fiftyone.operators.executor import ExecutionContext

    return ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"step": 0}, "step 0: must be at least 1"),
        ({"step": -1}, "step -1: must be at least 1"),
        ({"step": 2.5}, "step 2.5: must be a whole number"),
        ({"step": float("nan")}, "step nan"),
        ({"iou_threshold": float("nan")}, "iou_threshold nan: must be a number between 0 and 1"),
        ({"iou_threshold": 1.5}, "iou_threshold 1.5"),
        ({"slice_size": 2.5}, "slice_size 2.5"),
        ({"label_field": "/tmp/elsewhere"}, "label field '/tmp/elsewhere': give a field name, not a path"),
        ({"label_field": "_tracks"}, "label field '_tracks': Field names cannot start with '_'"),
    ],
)
def test_bad_tracking_parameters_are_refused_before_any_work(videos, params, overrides, message):
    # The run itself refuses it (a delegated run, a script), before any model loads or anything is written.
    with pytest.raises(ValueError, match=message):
        foo.get_operator(TRACK).prepare(context(videos, {**params, **overrides}))
    expect_user_error(run(videos, {**params, **overrides}), message)  # in the App
    assert "tracks" not in videos.get_frame_field_schema() and "tracks_error" not in videos.get_field_schema()


def test_track_video_never_clears_a_field_it_did_not_create(videos, params):
    notes = ["my note", "another note"]
    videos.set_values("tracks_error", notes)  # a user's own text field
    expect_user_error(run(videos, params), "'tracks_error' already exists and gsam2 did not create it")
    assert videos.values("tracks_error") == notes
    assert "tracks" not in videos.get_frame_field_schema(), "refused before any write"

    # An annotator's key frames are the source of a run, never its output (each video's field is cleared).
    sample = videos.first()
    sample.frames[3]["keys"] = fo.Detections(detections=[fo.Detection(label="bus", bounding_box=[0.1, 0.1, 0.2, 0.2])])
    sample.save()
    keyed = {"mode": "field", "source_field": "keys", "label_field": "keys", "tracker": params["tracker"]}
    expect_user_error(run(videos, keyed), "frame field 'keys' holds 1 labels track_video did not write")
    expect_user_error(run(videos, {**params, "label_field": "keys"}), "frame field 'keys' holds 1 labels")
    assert videos.count("frames.keys.detections") == 1 and videos.first().frames[3]["keys"].detections[0].label == "bus"


def test_a_rerun_reuses_the_fields_track_video_created(videos, params, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    videos.add_sample(fo.Sample(filepath=str(broken)))
    assert run(videos, params).result["failed_count"] == 1
    assert videos.get_field("tracks_error").info == {"created_by": "gsam2", "role": "errors", "label_field": "tracks"}
    broken.unlink()
    videos.delete_samples(videos.match(fo.ViewField("filepath") == str(broken)))
    result = run(videos, params)
    assert result.error is None and result.result["processed"] == 2
    assert videos.values("tracks_error") == [None, None]
    assert check_tracks(videos) > 0


def test_track_video_follows_objects_with_edgetam(videos, params, tiny_models):
    """EdgeTAM comes with the backend registry alone: the operator builds a RunSpec and core.Run tracks."""
    result = run(videos, {**params, "tracker": f"edgetam:{tiny_models['edgetam-video']}", "box_threshold": 0.0})
    assert result.error is None, result.error
    assert result.result["processed"] == 2 and result.result["failed_count"] == 0
    check_tracks(videos)
