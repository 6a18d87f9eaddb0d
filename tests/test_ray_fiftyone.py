"""FiftyOne datasets labelled on a real Ray cluster (gsam2.cluster.label_dataset, the operators' Ray option).

One cluster serves the session (:mod:`tests.ray_cluster`): the one ``RAY_ADDRESS``
names (``.ci/run`` starts a head), else a local one with 2 CPUs. Its workers write into this test
session's own database (tests/conftest.py names it), which they are given
explicitly: a labelled view must equal a local run of the same operator,
labels, masks and error records alike.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import fiftyone as fo
import numpy as np
import pytest
import torch
from fiftyone.operators.delegated import DelegatedOperationService
from PIL import Image

from gsam2.cluster import label_dataset
from gsam2.core import GroundedSam2Error, InputError
from gsam2.core.spec import RunSpec

from . import app_runs
from .conftest import shapes_image
from .media import moving_squares, write_video
from .ray_cluster import ray_address  # noqa: F401 - the session's cluster

GROUND = "@gsam2/grounded-sam2/ground_and_segment"
TRACK = "@gsam2/grounded-sam2/track_video"
SIZES = [(120, 160), (90, 70), (64, 64), (100, 150), (80, 120), (70, 90)]


@pytest.fixture(autouse=True)
def on_the_cluster(ray_address):
    """Every test here runs on the session's Ray cluster (:mod:`tests.ray_cluster`)."""


@pytest.fixture
def images(tmp_path):
    """Six generated images and one missing file (that sample's error is recorded, the others labelled)."""
    samples = []
    for index, (height, width) in enumerate(SIZES):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(shapes_image(height, width, seed=index)).save(path)
        samples.append(fo.Sample(filepath=str(path), tags=["keep"] if index != 4 else []))
    samples.append(fo.Sample(filepath=str(tmp_path / "missing.png"), tags=["keep"]))
    dataset = fo.Dataset()
    dataset.add_samples(samples)
    yield dataset
    DelegatedOperationService().delete_for_dataset(dataset._doc.id)
    dataset.delete()


def image_spec(tiny_models, **settings) -> RunSpec:
    return RunSpec.build(
        prompt="car. person.",
        detector=str(tiny_models["grounding-dino"]),
        segmenter=str(tiny_models["sam2"]),
        device="cpu",
        box_threshold=0.0,
        text_threshold=0.0,
        batch_size=2,
        **settings,
    )


def local_params(spec: RunSpec, label_field: str, **params) -> dict:
    """The operator's parameters for a local run of ``spec``."""
    return {
        "prompt": "car. person.",
        "detector": spec.detector,
        "segmenter": spec.segmenter,
        "device": "cpu",
        "box_threshold": spec.box_threshold,
        "text_threshold": spec.text_threshold,
        "batch_size": spec.batch_size,
        "label_field": label_field,
        **params,
    }


def detections_of(view, field: str) -> dict[str, list[tuple]]:
    """Every sample's labels as comparable values: label, box, mask pixels (wherever they are stored), confidence."""
    result = {}
    for sample in view.select_fields(field):
        labels = sample[field]
        result[sample.filepath] = None if labels is None else [
            (d.label, tuple(d.bounding_box), d.get_mask().astype(bool).tobytes(), d.confidence) for d in labels.detections
        ]
    return result


def assert_same_labels(view, ours: str, theirs: str) -> None:
    """The same labels, boxes, mask pixels and confidences, sample by sample."""
    assert detections_of(view, ours) == detections_of(view, theirs)


@contextlib.contextmanager
def worker_threads():
    """Run the local reference with the workers' torch threads: one, as Ray sets ``OMP_NUM_THREADS`` to an
    actor's CPUs (``set_omp_num_threads_if_unset`` in ray/_private/utils.py). A product summed over another
    number of threads may differ in its last bit, and the tiny random models' mask logits sit near 0."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def errors_of(view, field: str) -> dict[str, str | None]:
    error_field = f"{field}_error"
    if error_field not in view._root_dataset.get_field_schema():
        return {}
    return dict(zip(*view.values(["filepath", error_field])))


def test_a_view_labelled_on_ray_equals_a_local_run(images, tiny_models, tmp_path):
    view = images.match_tags("keep")  # five images and the missing file; one sample is not in the view
    spec = image_spec(tiny_models)
    with worker_threads():
        local = app_runs.run(GROUND, view, local_params(spec, "local", mask_storage="files", mask_dir=str(tmp_path / "masks")))
    assert local.error is None, local.error

    summary = label_dataset(view, spec, "onray", mask_dir=str(tmp_path / "masks"), workers=2, shards=3)

    assert summary["processed"] == local.result["processed"] == 5
    assert summary["failed_count"] == 1 and summary["failed"][0]["filepath"].endswith("missing.png")
    assert summary["objects"] == local.result["objects"] > 0
    assert_same_labels(images, "onray", "local")
    excluded = images.match_tags("keep", bool=False).first()
    assert excluded["onray"] is None, "a sample outside the view is not labelled"
    # The same error record, in a field the workers created (the driver's schema shows it after the run).
    assert images.get_field_schema()["onray_error"].info["created_by"] == "gsam2"
    assert errors_of(view, "onray") == errors_of(view, "local")
    assert sum(error is not None for error in errors_of(view, "onray").values()) == 1
    # Masks went to files under the shared folder, one folder per label field and sample.
    pngs = sorted(p.relative_to(tmp_path / "masks" / "onray").parent for p in (tmp_path / "masks" / "onray").rglob("*.png"))
    assert len(pngs) == summary["objects"] and len(set(pngs)) == 5
    assert all(d.mask is None and d.mask_path for d in images.first()["onray"].detections)

    # A re-run on Ray replaces the labels (the ranges are redone, nothing is added twice); more workers
    # than the test cluster's 2 CPUs share them rather than wait for CPUs that never come.
    again = label_dataset(view, spec, "onray", mask_dir=str(tmp_path / "masks"), workers=3)
    assert again["objects"] == summary["objects"] and images.count("onray.detections") == summary["objects"]


def test_the_operators_ray_option_labels_as_a_local_run(images, tiny_models, ray_address):
    spec = image_spec(tiny_models)
    with worker_threads():
        app_runs.run(GROUND, images, local_params(spec, "local"))
    ray_run = app_runs.run(GROUND, images, local_params(spec, "onray", ray_address=ray_address, ray_workers=2))
    assert ray_run.error is None, ray_run.error
    assert ray_run.result["processed"] == 6 and ray_run.result["failed_count"] == 1
    assert ray_run.progress[0]["label"] == "0/7 samples" and ray_run.progress[-1]["label"] == "7/7 samples"
    assert_same_labels(images, "onray", "local")
    assert errors_of(images, "onray") == errors_of(images, "local")


def test_videos_tracked_on_ray_equal_a_local_run(tmp_path, tiny_models):
    paths = [write_video(tmp_path / f"{name}.mp4", moving_squares(8)) for name in "abc"]
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(path)) for path in [*paths, tmp_path / "missing.mp4"]])
    spec = RunSpec.build(
        prompt="red square",
        detector=str(tiny_models["grounding-dino"]),
        segmenter=str(tiny_models["sam2"]),
        tracker=str(tiny_models["sam2-video"]),
        device="cpu",
        box_threshold=0.7,
        text_threshold=0.0,
        step=4,
    )
    try:
        params = {
            "prompt": "red square",
            "detector": spec.detector,
            "segmenter": spec.segmenter,
            "tracker": spec.tracker,
            "device": "cpu",
            "box_threshold": 0.7,
            "text_threshold": 0.0,
            "step": 4,
        }
        with worker_threads():
            local = app_runs.run(TRACK, dataset, dict(params, label_field="local"))
        assert local.error is None, local.error
        summary = label_dataset(dataset, spec, "onray", workers=2)
        assert summary["processed"] == 3 and summary["failed_count"] == 1
        assert summary["failed"][0]["filepath"].endswith("missing.mp4")
        assert summary["objects"] == local.result["objects"]
        assert errors_of(dataset, "onray") == errors_of(dataset, "local")
        assert [path for path, error in errors_of(dataset, "onray").items() if error] == [str(tmp_path / "missing.mp4")]
        for sample in dataset.exists("onray_error", False):
            for frame in sample.frames.values():
                ours = [(d.label, tuple(d.bounding_box), d.index, d.mask.tobytes()) for d in frame["onray"].detections]
                theirs = [(d.label, tuple(d.bounding_box), d.index, d.mask.tobytes()) for d in frame["local"].detections]
                assert ours == theirs
        assert dataset.count("frames.onray.detections") > 0
    finally:
        dataset.delete()


def test_a_spec_the_operator_cannot_run_is_refused_before_any_work(images, tiny_models):
    with pytest.raises(InputError, match=r"ground_and_segment cannot run this spec as given: it takes no compile"):
        label_dataset(images, image_spec(tiny_models, compile=True), "onray")
    assert "onray" not in images.get_field_schema()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"workers": 0}, r"workers 0: must be a whole number of at least 1"),
        ({"gpus_per_worker": 1000}, r"GPUs per worker 1000: the cluster has \d+ GPUs"),
        ({"gpus_per_worker": -1}, r"GPUs per worker -1: must be 0 or more"),
    ],
)
def test_bad_ray_options_are_one_line(images, tiny_models, options, message):
    with pytest.raises(InputError, match=message):
        label_dataset(images, image_spec(tiny_models), "onray", **options)


def test_a_worker_error_is_the_runs_one_line_error(images, tiny_models, tmp_path):
    spec = image_spec(tiny_models).replace(segmenter=str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(GroundedSam2Error, match=r"segmenter checkpoint .*no-such-checkpoint.: no such file or folder"):
        label_dataset(images, spec, "onray")


def test_a_bad_address_is_one_line(tmp_path):
    """A fresh process (this one is already on the session's cluster, which it keeps): an address where no
    cluster answers is the run's one-line error, in the form's words, before any work."""
    script = (
        "import fiftyone as fo\n"
        "from gsam2.cluster import label_dataset\n"
        "from gsam2.core import InputError\n"
        "from gsam2.core.spec import RunSpec\n"
        "dataset = fo.Dataset()\n"
        f"dataset.add_sample(fo.Sample(filepath={str(tmp_path / 'a.png')!r}))\n"
        "try:\n"
        "    label_dataset(dataset, RunSpec.build(prompt='car.', device='cpu'), 'onray', address='127.0.0.1:9')\n"
        "except InputError as error:\n"
        "    print('ERROR', error)\n"
        "finally:\n"
        "    print('FIELDS', sorted(dataset.get_field_schema()))\n"
        "    dataset.delete()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    lines = done.stdout.splitlines()
    assert "ERROR Ray cluster address 127.0.0.1:9: no Ray cluster answers there (Connection refused)" in lines, done
    assert not any("onray" in line for line in lines if line.startswith("FIELDS")), "nothing created before the check"


def test_another_address_than_the_connected_clusters_is_one_line(images, tiny_models, ray_address):
    with pytest.raises(InputError, match=r"^Ray cluster address 127\.0\.0\.1:9: this process is already connected to "
                       r"the Ray cluster at \S+ \(one cluster per process: restart it to use another\)$"):
        label_dataset(images, image_spec(tiny_models), "onray", address="127.0.0.1:9")
    assert "onray" not in images.get_field_schema(), "nothing created before the check"
    host, port = ray_address.rsplit(":", 1)
    from gsam2.cluster.fiftyone_datasets import same_address

    assert same_address(ray_address, ray_address) and same_address(f"localhost:{port}", ray_address)
    assert not same_address(f"{host}:{int(port) + 1}", ray_address)


def form(uri: str, dataset, params: dict) -> dict:
    """The form's properties for ``params``, as FiftyOne resolves them for the App."""
    import fiftyone.operators as foo
    from fiftyone.operators.executor import ExecutionContext

    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    return foo.get_operator(uri).resolve_input(ctx).type.properties


@pytest.mark.parametrize("uri", [GROUND, "@gsam2/grounded-sam2/auto_label", "@gsam2/grounded-sam2/florence2"])
def test_the_image_forms_offer_a_ray_cluster_address_next_to_background_runs(images, uri):
    names = list(form(uri, images, {}))
    assert names.index("ray_address") == names.index("num_shards") + 1
    assert "ray_workers" not in names, "the pool's fields come with an address"
    with_address = form(uri, images, {"ray_address": "auto"})
    assert with_address["ray_address"].view.label == "Ray cluster address" and not with_address["ray_address"].invalid
    assert {"ray_workers", "ray_gpus_per_worker"} <= set(with_address)
    problems = form(uri, images, {"ray_address": "auto", "num_shards": 2, "ray_workers": 0, "ray_gpus_per_worker": -0.5})
    assert problems["ray_address"].error_message == (
        "Ray cluster address: runs on Ray are not split into background runs too; set num_shards to 1"
    )
    assert problems["ray_workers"].error_message == "workers 0: must be a whole number of at least 1"
    assert problems["ray_gpus_per_worker"].error_message == "GPUs per worker -0.5: must be 0 or more (fractions share a GPU)"


def test_the_video_form_offers_a_ray_cluster_address(tmp_path):
    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=str(write_video(tmp_path / "a.mp4", moving_squares(2)))))
    try:
        properties = form(TRACK, dataset, {"ray_address": "10.0.0.1:6379", "ray_workers": 2})
        assert "ray_address" in properties and not properties["ray_workers"].invalid
    finally:
        dataset.delete()
