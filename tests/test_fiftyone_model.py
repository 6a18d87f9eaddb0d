"""The FiftyOne-native path: ``dataset.apply_model`` with our Model, and the remote zoo source.

Everything goes through FiftyOne's own code: ``apply_model`` decodes the images
(and opens the videos with its FFmpeg reader) and saves the labels, and the zoo
source is registered from an archive URL the way FiftyOne fetches any remote
source, served here from a local HTTP server.
"""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading

import fiftyone as fo
import fiftyone.zoo as foz
import numpy as np
import pytest
from gsam2.core import InputError
from gsam2.operators.fiftyone_model import GroundedSam2Model
from PIL import Image

from .conftest import REPO_ROOT, shapes_image
from .media import moving_squares, write_video

CLASSES = ["car", "person"]


@pytest.fixture
def images(tmp_path):
    samples = []
    for index, (height, width) in enumerate([(120, 160), (90, 70), (64, 64)]):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(shapes_image(height, width, seed=index)).save(path)
        samples.append(fo.Sample(filepath=str(path)))
    dataset = fo.Dataset()
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


@pytest.fixture
def model_options(tiny_models):
    return {
        "detector": str(tiny_models["grounding-dino"]),
        "segmenter": str(tiny_models["sam2"]),
        "box_threshold": 0.0,
        "text_threshold": 0.0,
        "device": "cpu",
    }


def check_image_labels(dataset, field, allowed):
    total = 0
    for sample in dataset:
        with Image.open(sample.filepath) as image:
            width, height = image.size
        for detection in sample[field].detections:
            x, y, w, h = detection.bounding_box
            assert detection.label in allowed
            assert detection.mask.shape == (round(h * height), round(w * width)), "the mask covers the box"
            total += 1
    return total


def test_apply_model_on_images_in_batches(images, model_options):
    model = GroundedSam2Model(classes=CLASSES, **model_options)
    images.apply_model(model, label_field="gsam2", batch_size=2)
    assert check_image_labels(images, "gsam2", set(CLASSES)) > 0
    assert images.count("gsam2") == 3, "every image got a Detections, empty or not"


def test_apply_model_batched_equals_one_at_a_time(images, model_options):
    model = GroundedSam2Model(prompt="car. person.", **model_options)
    images.apply_model(model, label_field="batched", batch_size=3)
    images.apply_model(model, label_field="single", batch_size=1)
    for sample in images:
        batched, single = sample["batched"].detections, sample["single"].detections
        assert [d.label for d in batched] == [d.label for d in single]
        assert np.allclose([d.bounding_box for d in batched], [d.bounding_box for d in single], atol=1e-6)


def test_a_prompt_field_gives_each_sample_its_own_prompt(images, model_options):
    images.set_values("what", ["car.", "person.", "car."])
    model = GroundedSam2Model(prompt_field="what", **model_options)
    images.apply_model(model, label_field="prompted", batch_size=3, skip_failures=False)
    # FiftyOne's own convention: the field named in apply_model's keyword arguments.
    model = GroundedSam2Model(classes=["bus"], **model_options)
    images.apply_model(model, label_field="from_kwargs", batch_size=2, skip_failures=False, prompt_field="what")
    for sample in images:
        assert sample["prompted"].detections and sample["from_kwargs"].detections
        assert {d.label for d in sample["prompted"].detections} == {sample["what"].rstrip(".")}
        assert {d.label for d in sample["from_kwargs"].detections} == {sample["what"].rstrip(".")}


def test_a_model_without_a_prompt_is_refused(model_options):
    with pytest.raises(InputError, match="what to find"):
        GroundedSam2Model(**model_options)
    with pytest.raises(InputError, match="not both"):
        GroundedSam2Model(classes=CLASSES, prompt="car.", **model_options)


def test_apply_model_on_a_video_writes_frame_tracks(tmp_path, tiny_models, model_options):
    path = write_video(tmp_path / "squares.mp4", moving_squares(12))
    videos = fo.Dataset()
    videos.add_sample(fo.Sample(filepath=str(path)))
    try:
        model = GroundedSam2Model(
            classes=["square"], media_type="video", tracker=str(tiny_models["sam2-video"]), step=4, **model_options
        )
        videos.apply_model(model, label_field="tracks")
        sample = videos.first()
        assert sorted(sample.frames.keys()) == list(range(1, 13)), "every frame, 1-based"
        labels = [d for frame in sample.frames.values() for d in frame["tracks"].detections]
        assert labels, "the tiny detector with threshold 0 finds something"
        assert all(isinstance(d.index, int) for d in labels), "index is the track id"
        assert {d.label for d in labels} == {"square"}
    finally:
        videos.delete()


# ---------------------------------------------------------------- the zoo source


@pytest.fixture
def zoo_source_url(tmp_path):
    """The repository's zoo/ folder as an archive on a local web server, as a release asset would be."""
    archive = tmp_path / "served" / "gsam2-zoo.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(
            REPO_ROOT / "zoo", arcname="gsam2-zoo", filter=lambda info: None if "__pycache__" in info.name else info
        )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    server.shutdown()


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(fo.config, "model_zoo_dir", str(tmp_path / "zoo"))
    return tmp_path / "zoo"


def test_zoo_source_registers_and_loads(zoo_source_url, zoo_dir, images, model_options):
    foz.register_zoo_model_source(zoo_source_url)
    assert {"grounded-sam2", "grounded-sam2-video"} <= set(foz.list_zoo_models(source=zoo_source_url))
    model = foz.load_zoo_model("grounded-sam2", classes=CLASSES, **model_options)
    assert isinstance(model, fo.core.models.Model) and model.media_type == "image"
    images.apply_model(model, label_field="zoo", batch_size=2)
    assert check_image_labels(images, "zoo", set(CLASSES)) > 0
    # "Downloaded" is the folder FiftyOne checks for; it records the default hub checkpoints.
    downloaded = [path for path in zoo_dir.rglob("config.json") if path.parent.name == "grounded-sam2"]
    assert len(downloaded) == 1 and "facebook/sam2.1-hiera-tiny" in downloaded[0].read_text()


def test_zoo_video_model(zoo_source_url, zoo_dir, tiny_models, model_options):
    foz.register_zoo_model_source(zoo_source_url)
    model = foz.load_zoo_model(
        "grounded-sam2-video", classes=["square"], tracker=str(tiny_models["sam2-video"]), **model_options
    )
    assert model.media_type == "video"


# ---------------------------------------------------------------- every setting of a run (issue 22)


def test_apply_model_takes_the_florence2_task_and_slicing(images, tiny_models):
    """``task``, ``slice_size`` and ``slice_overlap`` reach the detector (a RunSpec built from the kwargs)."""
    model = GroundedSam2Model(
        detector=f"florence2:{tiny_models['florence2']}",
        task="object_detection",  # prompt-free: no classes needed
        slice_size=48,
        slice_overlap=8,
        segmenter=str(tiny_models["sam2"]),
        device="cpu",
    )
    assert (model.spec.task, model.spec.slice_size, model.spec.slice_overlap) == ("object_detection", 48, 8)
    images.apply_model(model, label_field="florence", batch_size=2)
    assert len(images.exists("florence")) == len(images)


@pytest.mark.parametrize(("settings", "message"), [({"step": 0}, "step 0: must be at least 1"),
                                                   ({"slice_size": 64, "slice_overlap": 64}, "slice_overlap 64")])
def test_a_bad_setting_is_one_line_when_the_model_is_made(settings, message, model_options):
    with pytest.raises(InputError, match=message) as error:
        GroundedSam2Model(classes=CLASSES, **{**model_options, **settings})
    assert "\n" not in str(error.value)


def test_apply_model_tracks_a_video_with_sam3(tmp_path, tiny_models):
    path = write_video(tmp_path / "squares.mp4", moving_squares(6))
    videos = fo.Dataset()
    videos.add_sample(fo.Sample(filepath=str(path)))
    try:
        model = GroundedSam2Model(
            classes=["square"], media_type="video", tracker=f"sam3:{tiny_models['sam3-video']}",
            box_threshold=0.0, device="cpu",
        )
        videos.apply_model(model, label_field="tracks")
        sample = videos.first()
        assert sorted(sample.frames.keys()) == list(range(1, 7)), "every frame, 1-based"
        labels = [d for frame in sample.frames.values() if frame["tracks"] for d in frame["tracks"].detections]
        assert all(isinstance(d.index, int) for d in labels)
    finally:
        videos.delete()
