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

from .app_runs import expect_user_error
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

    params = {"task": "open_vocabulary_detection", "checkpoint": str(tiny_models["florence2"]), "device": "cpu"}
    expect_user_error(run(f"{PLUGIN}/florence2", dataset, params), "prompt")
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
    assert dataset.get_field("auto_caption").info == {"created_by": "gsam2", "role": "captions", "label_field": "auto"}
    assert run(f"{PLUGIN}/auto_label", dataset, params).result["processed"] == 2, "a re-run writes its own field"


def test_auto_label_never_overwrites_a_caption_field_it_did_not_create(dataset, tiny_models):
    dataset.set_values("auto_caption", ["my caption", "mine too"])  # a user's own text field
    params = {"checkpoint": str(tiny_models["florence2"]), "segmenter": str(tiny_models["sam2"]), "device": "cpu",
              "caption_task": "caption", "label_field": "auto"}
    expect_user_error(run(f"{PLUGIN}/auto_label", dataset, params), "'auto_caption' already exists and gsam2 did not")
    assert dataset.values("auto_caption") == ["my caption", "mine too"]
    assert "auto" not in dataset.get_field_schema(), "refused before any write"


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


# ---------------------------------------------------------------- DINO-X / Grounding DINO 1.5-1.6 (cloud)

CLOUD_TOKEN = "backend-test-dds-token"


@pytest.fixture
def cloud(monkeypatch):
    """The cloud API stand-in, named by the environment as a user's shell would (token and endpoint)."""
    pytest.importorskip("dds_cloudapi_sdk", reason='needs the cloud extra: pip install "gsam2[cloud]"')
    from .dds_standin import DdsStandIn

    with DdsStandIn(CLOUD_TOKEN) as server:
        server.polls_before_done = 0
        server.objects = [
            {"category": "car", "score": 0.9, "bbox": [4, 6, 40, 30]},
            {"category": "person", "score": 0.8, "bbox": [20, 10, 60, 60]},
        ]
        monkeypatch.setenv("DDS_API_TOKEN", CLOUD_TOKEN)
        monkeypatch.setenv("DDS_CLOUDAPI_ENDPOINT", server.url)
        yield server


def test_dinox_from_the_cli(tmp_path, image_dir, tiny_models, cloud):
    records = run_cli(tmp_path, image_dir, "--prompt", "car. person.", "--detector", "dinox",
                      "--segmenter", str(tiny_models["sam2"]))
    assert [len(record["annotations"]) for record in records] == [2, 2]
    assert {a["class_name"] for r in records for a in r["annotations"]} == {"car", "person"}
    created = cloud.created()
    assert len(created) == 2 and all(r.path == "/v2/task/dinox/detection" for r in created)
    assert created[0].body["prompt"] == {"type": "text", "text": "car.person"}


def test_grounding_dino_1_6_from_the_operator_delegated_reads_the_secret(dataset, tiny_models, cloud):
    params = {"prompt": "car. person.", "detector": "grounding-dino-1.6-pro", "segmenter": str(tiny_models["sam2"]),
              "device": "cpu", "box_threshold": 0.3, "label_field": "cloud"}
    run(GROUND, dataset, params, delegate=True)
    [done] = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    assert done.error is None, done.error
    assert done.result["processed"] == 2 and done.result["objects"] == 4
    assert sorted(labels_of(dataset, "cloud")) == ["car", "car", "person", "person"]
    assert {r.path for r in cloud.created()} == {"/v2/task/grounding_dino/detection"}
    assert all(r.body["model"] == "GroundingDino-1.6-Pro" for r in cloud.created())
    stored = DelegatedOperationService().list_operations(dataset_name=dataset.name)
    assert stored and all(CLOUD_TOKEN not in json.dumps(op.to_pymongo(), default=str) for op in stored)


def test_cloud_detector_without_a_token_fails_clearly_and_writes_nothing(tmp_path, image_dir, tiny_models, cloud,
                                                                         monkeypatch):
    monkeypatch.delenv("DDS_API_TOKEN")
    result = gsam2("image", "--prompt", "car", "--input", str(image_dir), "--output", str(tmp_path / "out"),
                   "--detector", "dinox", "--segmenter", str(tiny_models["sam2"]), "--device", "cpu", "--quiet")
    assert result.returncode != 0
    assert "DDS_API_TOKEN" in result.stderr and "Traceback" not in result.stderr
    assert not cloud.requests
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True


# ---------------------------------------------------------------- original checkpoints (.pt / .pth)


@pytest.fixture(scope="module")
def original_sam2(tmp_path_factory):
    """A tiny SAM 2.1 ``.pt`` under a fine-tuned name, its ``.yaml`` config beside it."""
    pytest.importorskip("sam2", reason='needs the extra: pip install "gsam2[sam2-original]"')
    import shutil

    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from .test_original_checkpoints import tiny_sam2_config

    folder = tmp_path_factory.mktemp("sam2-pt")
    config = tiny_sam2_config(folder / "config.yaml")
    torch.manual_seed(0)
    model = instantiate(OmegaConf.load(config).model, _recursive_=True)
    checkpoint = folder / "my_finetuned_sam2.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    shutil.copy(config, checkpoint.with_suffix(".yaml"))  # the sidecar config names the architecture
    return checkpoint


def test_original_sam2_checkpoint_from_the_cli(tmp_path, image_dir, tiny_models, original_sam2):
    records = run_cli(tmp_path, image_dir, "--prompt", "car. person.", "--detector", str(tiny_models["grounding-dino"]),
                      "--segmenter", str(original_sam2))
    assert sum(len(record["annotations"]) for record in records) > 0


def test_original_sam2_checkpoint_from_the_operator(dataset, tiny_models, original_sam2):
    params = {"prompt": "car. person.", "detector": str(tiny_models["grounding-dino"]), "segmenter": str(original_sam2),
              "device": "cpu", "box_threshold": 0.0, "text_threshold": 0.0, "label_field": "pt"}
    result = run(GROUND, dataset, params)
    assert result.result["processed"] == 2 and result.result["objects"] > 0
    for sample in dataset:
        for detection in sample["pt"].detections:
            assert detection.mask is not None and detection.mask.dtype == bool


def test_original_sam2_checkpoint_cannot_track_video(original_sam2):
    from gsam2.core import ModelLoadError
    from gsam2.core.backends import load_tracker

    with pytest.raises(ModelLoadError, match="serves images only; video tracking needs a transformers checkpoint"):
        load_tracker(str(original_sam2), device="cpu")


@pytest.fixture
def original_groundingdino(tmp_path, monkeypatch):
    """A tiny Grounding DINO ``.pth`` under a fine-tuned name, its ``.py`` config beside it.

    Swin's sizes are a fixed table inside the package, not config values: the
    tiny Swin stands in for the package's builder while the test runs.
    """
    pytest.importorskip("groundingdino", reason='needs the extra: pip install "gsam2[groundingdino-original]"')
    import shutil

    from groundingdino.models.GroundingDINO.backbone import backbone

    from .test_original_checkpoints import build_tiny_groundingdino, tiny_swin

    checkpoint, config, _ = build_tiny_groundingdino(tmp_path)
    monkeypatch.setattr(backbone, "build_swin_transformer", tiny_swin)
    renamed = checkpoint.rename(checkpoint.with_name("detector_finetune.pth"))
    shutil.copy(config, renamed.with_suffix(".py"))
    return renamed


def test_original_groundingdino_checkpoint_from_the_cli(tmp_path, image_dir, tiny_models, original_groundingdino,
                                                        capsys):
    # In-process, so that the tiny Swin stands in for the package's fixed Swin-T table.
    from gsam2.cli import main

    output = tmp_path / "out"
    code = main(["image", "--prompt", "car. traffic light.", "--input", str(image_dir), "--output", str(output),
                 "--detector", str(original_groundingdino), "--segmenter", str(tiny_models["sam2"]),
                 "--device", "cpu", "--quiet", "--box-threshold", "0.2", "--text-threshold", "0"])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(path.read_text()) for path in sorted(output.glob("*.json"))]
    names = {a["class_name"] for r in records for a in r["annotations"]}
    assert names and names <= {"car", "traffic light"}


def test_original_groundingdino_checkpoint_from_the_operator(dataset, tiny_models, original_groundingdino):
    params = {"prompt": "car. traffic light.", "detector": str(original_groundingdino),
              "segmenter": str(tiny_models["sam2"]), "device": "cpu", "box_threshold": 0.2, "text_threshold": 0.0,
              "label_field": "pth"}
    result = run(GROUND, dataset, params)
    assert result.result["processed"] == 2 and result.result["objects"] > 0
    assert set(labels_of(dataset, "pth")) <= {"car", "traffic light"}


def test_dinox_as_the_video_pipelines_detection_step(tmp_path, tiny_models, cloud):
    from .media import moving_squares, write_video
    from .test_video import gsam2_video

    cloud.objects = [{"category": "red square", "score": 0.9, "bbox": [4, 4, 24, 24]}]
    video = write_video(tmp_path / "clip.mp4", moving_squares(12), codec="mpeg4", pix_fmt="yuv420p")
    result = gsam2_video(tiny_models, "--detector", "dinox", "--prompt", "red square.", "--input", str(video),
                         "--output", str(tmp_path / "out"), "--step", "5")
    assert result.returncode == 0, result.stderr
    assert len(cloud.created()) == 3, "one cloud task per keyframe (0, 5, 10)"
    lines = [json.loads(line) for line in (tmp_path / "out" / "clip.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    tracked = [obj for line in lines for obj in line["objects"]]
    assert tracked and {obj["class_name"] for obj in tracked} == {"red square"}
    assert {obj["id"] for obj in lines[0]["objects"]} == {1}
