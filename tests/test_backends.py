"""Every detector backend once through the CLI and once through a FiftyOne operator.

The backends' own behaviour is tested in their test files; this checks that a
backend is selectable everywhere the detector is, with a parameter, not code.
"""

from __future__ import annotations

import json

import fiftyone as fo
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from PIL import Image

from gsam2.core import rle_to_mask

from .conftest import shapes_image
from .test_cli import gsam2
from .test_operators import GROUND, run

PLUGIN = "@gsam2/grounded-sam2"


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (height, width) in enumerate([(120, 160), (96, 80)]):
        Image.fromarray(shapes_image(height, width, seed=index)).save(folder / f"image{index}.png")
    return folder


@pytest.fixture
def dataset(image_dir):
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=str(path)) for path in sorted(image_dir.glob("*.png"))])
    yield dataset
    DelegatedOperationService().delete_for_dataset(dataset._doc.id)
    dataset.delete()


def run_cli(tmp_path, image_dir, *options: str) -> list[dict]:
    output = tmp_path / "out"
    result = gsam2("image", "--input", str(image_dir), "--output", str(output), "--device", "cpu", "--quiet",
                   "--box-threshold", "0", "--text-threshold", "0", *options)
    assert result.returncode == 0, result.stderr
    records = [json.loads(path.read_text()) for path in sorted(output.glob("*.json"))]
    assert len(records) == 2
    for record in records:
        for annotation in record["annotations"]:
            mask = rle_to_mask(annotation["segmentation"])
            assert mask.shape == (record["img_height"], record["img_width"])
    return records


def labels_of(dataset, field) -> list[str]:
    return [det.label for sample in dataset for det in (sample[field].detections if sample[field] else [])]


# ---------------------------------------------------------------- OWLv2


def test_owlv2_from_the_cli(tmp_path, image_dir, tiny_models):
    records = run_cli(tmp_path, image_dir, "--prompt", "car. person.", "--detector", f"owlv2:{tiny_models['owlv2']}",
                      "--segmenter", str(tiny_models["sam2"]))
    names = {a["class_name"] for r in records for a in r["annotations"]}
    assert names and names <= {"car", "person"}


def test_owlv2_from_the_operator(dataset, tiny_models):
    params = {"prompt": "car. person.", "detector": f"owlv2:{tiny_models['owlv2']}", "segmenter": str(tiny_models["sam2"]),
              "device": "cpu", "box_threshold": 0.0, "label_field": "owl"}
    result = run(GROUND, dataset, params)
    assert result.result["processed"] == 2 and result.result["objects"] > 0
    assert set(labels_of(dataset, "owl")) <= {"car", "person"}


# ---------------------------------------------------------------- slicing


def test_sliced_inference_from_the_cli(tmp_path, image_dir, tiny_models):
    plain = run_cli(tmp_path / "plain", image_dir, "--prompt", "car", "--detector", str(tiny_models["grounding-dino"]),
                    "--segmenter", str(tiny_models["sam2"]))
    sliced = run_cli(tmp_path / "sliced", image_dir, "--prompt", "car", "--detector", str(tiny_models["grounding-dino"]),
                     "--segmenter", str(tiny_models["sam2"]), "--slice-size", "64", "--slice-overlap", "16")
    # Tiles see different crops, so the random tiny model finds different boxes than on whole images.
    plain_boxes = [a["bbox"] for r in plain for a in r["annotations"]]
    sliced_boxes = [a["bbox"] for r in sliced for a in r["annotations"]]
    assert sliced_boxes and sliced_boxes != plain_boxes


def test_bad_slice_overlap_is_a_usage_error(tmp_path, image_dir, tiny_models):
    result = gsam2("image", "--prompt", "car", "--input", str(image_dir), "--output", str(tmp_path / "out"),
                   "--detector", str(tiny_models["grounding-dino"]), "--device", "cpu",
                   "--slice-size", "64", "--slice-overlap", "64")
    assert result.returncode == 2
    assert "overlap" in result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_sliced_inference_from_the_operator(dataset, tiny_models):
    params = {"prompt": "car", "detector": str(tiny_models["grounding-dino"]), "segmenter": str(tiny_models["sam2"]),
              "device": "cpu", "box_threshold": 0.0, "text_threshold": 0.0, "label_field": "sliced",
              "slice_size": 64, "slice_overlap": 16}
    result = run(GROUND, dataset, params, delegate=True)
    [done] = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    assert done.error is None, done.error
    assert done.result["processed"] == 2 and done.result["objects"] > 0
    assert result is not None
    assert set(labels_of(dataset, "sliced")) == {"car"}


def test_unknown_detector_option_is_refused(tiny_models):
    from gsam2.core import InputError, load_detector

    with pytest.raises(InputError, match="does not take task"):
        load_detector(f"owlv2:{tiny_models['owlv2']}", device="cpu", task="object_detection")


# ---------------------------------------------------------------- Florence-2 and auto-labelling


@pytest.fixture
def one_torch_thread():
    # Beam search over a tiny model is all per-step overhead; threads only contend (see test_florence2.py).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_florence2_task_from_the_cli_needs_no_prompt(tmp_path, image_dir, tiny_models):
    records = run_cli(tmp_path, image_dir, "--detector", f"florence2:{tiny_models['florence2']}",
                      "--task", "dense_region_caption", "--segmenter", str(tiny_models["sam2"]), "--batch-size", "2")
    for record in records:
        assert all(annotation["score"] == 1.0 for annotation in record["annotations"])


def test_florence2_prompted_task_without_a_prompt_is_a_usage_error(tmp_path, image_dir, tiny_models):
    result = gsam2("image", "--input", str(image_dir), "--output", str(tmp_path / "out"), "--device", "cpu",
                   "--detector", f"florence2:{tiny_models['florence2']}", "--task", "phrase_grounding")
    assert result.returncode == 2
    assert "prompt" in result.stderr and "Traceback" not in result.stderr


def test_autolabel_from_the_cli_writes_the_caption(tmp_path, image_dir, tiny_models):
    output = tmp_path / "auto"
    result = gsam2("autolabel", "--input", str(image_dir), "--output", str(output), "--device", "cpu", "--quiet",
                   "--detector", f"florence2:{tiny_models['florence2']}", "--segmenter", str(tiny_models["sam2"]),
                   "--caption", "caption")
    assert result.returncode == 0, result.stderr
    records = [json.loads(path.read_text()) for path in sorted(output.glob("*.json"))]
    assert len(records) == 2
    assert all(isinstance(record["caption"], str) for record in records)
    assert "images processed: 2" in result.stdout


def test_florence2_operator_with_a_prompt_free_task(dataset, tiny_models, one_torch_thread):
    params = {"task": "object_detection", "checkpoint": str(tiny_models["florence2"]),
              "segmenter": str(tiny_models["sam2"]), "device": "cpu", "label_field": "florence"}
    result = run(f"{PLUGIN}/florence2", dataset, params)
    assert result.result["processed"] == 2 and result.result["failed_count"] == 0
    for sample in dataset:
        assert sample["florence"] is not None
        assert all(det.confidence == 1.0 and det.gsam2_source == "florence2" for det in sample["florence"].detections)


def test_florence2_operator_refuses_a_prompted_task_without_a_prompt(dataset, tiny_models):
    from fiftyone.operators.executor import ExecutionError

    params = {"task": "open_vocabulary_detection", "checkpoint": str(tiny_models["florence2"]), "device": "cpu"}
    with pytest.raises(ExecutionError, match="prompt"):
        run(f"{PLUGIN}/florence2", dataset, params)
    assert "florence2" not in dataset.get_field_schema()


def test_ground_and_segment_takes_florence2_with_a_task(dataset, tiny_models, one_torch_thread):
    params = {"detector": f"florence2:{tiny_models['florence2']}", "task": "open_vocabulary_detection",
              "prompt": "car. person.", "segmenter": str(tiny_models["sam2"]), "device": "cpu", "label_field": "ov"}
    result = run(GROUND, dataset, params)
    assert result.result["processed"] == 2
    assert set(labels_of(dataset, "ov")) <= {"car", "person"}


def test_auto_label_operator_stores_captions_delegated(dataset, tiny_models, one_torch_thread):
    params = {"checkpoint": str(tiny_models["florence2"]), "segmenter": str(tiny_models["sam2"]), "device": "cpu",
              "caption_task": "caption", "label_field": "auto"}
    run(f"{PLUGIN}/auto_label", dataset, params, delegate=True)
    [done] = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    assert done.error is None, done.error
    assert done.result["processed"] == 2
    dataset.reload()
    captions = dataset.values("auto_caption")
    assert len(captions) == 2 and all(isinstance(caption, str) for caption in captions)
    assert dataset.get_field_schema()["auto_caption"].__class__.__name__ == "StringField"


# ---------------------------------------------------------------- SAM 3


def test_sam3_from_the_cli_needs_no_sam2(tmp_path, image_dir, tiny_models):
    # A segmenter that does not exist proves SAM 2 is never loaded: SAM 3 makes the masks.
    records = run_cli(tmp_path, image_dir, "--prompt", "car. person.", "--detector", f"sam3:{tiny_models['sam3']}",
                      "--segmenter", str(tmp_path / "no-sam2-here"))
    names = {a["class_name"] for r in records for a in r["annotations"]}
    assert names and names <= {"car", "person"}


def test_sam3_from_the_operator(dataset, tiny_models):
    params = {"prompt": "car", "detector": f"sam3:{tiny_models['sam3']}", "segmenter": "/no/sam2/here",
              "device": "cpu", "box_threshold": 0.0, "label_field": "sam3"}
    result = run(GROUND, dataset, params)
    assert result.result["processed"] == 2 and result.result["objects"] > 0
    for sample in dataset:
        for detection in sample["sam3"].detections:
            assert detection.label == "car" and detection.mask is not None and detection.mask.dtype == bool
