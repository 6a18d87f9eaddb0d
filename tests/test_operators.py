"""The FiftyOne operators on a real dataset in a real MongoDB, run through FiftyOne's operator machinery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from PIL import Image

from . import app_runs
from .app_runs import expect_user_error
from .conftest import shapes_image

PLUGIN = "@gsam2/grounded-sam2"
GROUND = f"{PLUGIN}/ground_and_segment"
SEGMENT = f"{PLUGIN}/segment_with_sam2"
SIZES = [(120, 160), (90, 70), (64, 64), (100, 150), (80, 120)]


@pytest.fixture
def dataset(tmp_path):
    """Five generated images of different sizes; deleted afterwards."""
    samples = []
    for index, (height, width) in enumerate(SIZES):
        path = tmp_path / f"image{index}.png"
        Image.fromarray(shapes_image(height, width, seed=index)).save(path)
        samples.append(fo.Sample(filepath=str(path)))
    dataset = fo.Dataset()
    dataset.add_samples(samples)
    yield dataset
    DelegatedOperationService().delete_for_dataset(dataset._doc.id)
    dataset.delete()


@pytest.fixture
def model_params(tiny_models):
    return {"detector": str(tiny_models["grounding-dino"]), "segmenter": str(tiny_models["sam2"]), "device": "cpu"}


def run(uri, dataset_or_view, params, delegate=False):
    """Execute as the App does (progress and the result dialog, streamed), or schedule a delegated run."""
    return app_runs.run(uri, dataset_or_view, params, delegate)


def run_queue(dataset) -> list:
    results = DelegatedOperationService().execute_queued_operations(dataset_name=dataset.name)
    for result in results:
        assert result.error is None, result.error
    return results


def ground_params(model_params, **overrides):
    params = {
        "prompt": "car. person.",
        "box_threshold": 0.0,
        "text_threshold": 0.0,
        "batch_size": 2,
        "label_field": "gsam2",
        **model_params,
    }
    params.update(overrides)
    return params


def check_labels(dataset, field, allowed_labels, require_confidence=True):
    total = 0
    for sample in dataset.select_fields(field):
        with Image.open(sample.filepath) as image:
            width, height = image.size
        for detection in sample[field].detections:
            x, y, w, h = detection.bounding_box
            assert 0 <= x and 0 <= y and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6
            assert detection.label in allowed_labels
            assert detection.confidence is not None or not require_confidence
            mask = detection.get_mask()
            assert mask.shape == (round(h * height), round(w * width)), "mask covers exactly the box"
            total += 1
    return total


def test_both_operators_are_registered():
    assert foo.get_operator(GROUND).config.allow_delegated_execution
    # Delegated by default only where the App can offer Schedule (see sharding.delegation_available).
    assert foo.get_operator(SEGMENT).config.default_choice_to_delegated == fo.config.allow_legacy_orchestrators
    assert foo.get_operator(GROUND).config.execute_as_generator, "immediate runs stream their progress"


def test_ground_and_segment_immediate(dataset, model_params):
    result = run(GROUND, dataset, ground_params(model_params))
    assert result.error is None, result.error
    assert result.result["processed"] == 5 and result.result["failed_count"] == 0
    schema = dataset.get_field_schema()
    assert schema["gsam2"].document_type is fo.Detections
    objects = check_labels(dataset, "gsam2", {"car", "person"})
    assert objects == result.result["objects"] > 0
    assert "gsam2_error" not in dataset.get_field_schema(), "no failure: no error field in the sidebar"
    # What the App showed: progress after every batch (batch_size 2 of 5 samples), then the dialog.
    assert [p["label"] for p in result.progress] == ["0/5 samples", "2/5 samples", "4/5 samples", "5/5 samples"]
    assert result.progress[-1]["progress"] == 1.0
    assert result.triggered[-2:] == ["reload_dataset", "show_output"]
    assert result.result["summary"] == f"**5** samples labelled, **{objects}** objects written to `gsam2`."
    assert result.outputs["type"]["properties"]["summary"]["view"]["name"] == "MarkdownView"


def test_rerun_replaces_instead_of_duplicating(dataset, model_params):
    run(GROUND, dataset, ground_params(model_params))
    first = dataset.count("gsam2.detections")
    run(GROUND, dataset, ground_params(model_params))
    assert dataset.count("gsam2.detections") == first
    # merge mode keeps other labels in the field and replaces only ours
    sample = dataset.first()
    sample["gsam2"].detections.append(fo.Detection(label="manual", bounding_box=[0.1, 0.1, 0.2, 0.2]))
    sample.save()
    run(GROUND, dataset, ground_params(model_params, write_mode="merge"))
    assert dataset.count("gsam2.detections") == first + 1
    assert "manual" in [d.label for d in dataset.first()["gsam2"].detections]


def test_ground_and_segment_delegated(dataset, model_params):
    queued = run(GROUND, dataset, ground_params(model_params), delegate=True)
    assert queued.error is None and queued.delegated
    assert "gsam2" not in dataset.get_field_schema(), "nothing runs until a worker picks the operation up"
    [result] = run_queue(dataset)
    assert result.result["processed"] == 5
    assert check_labels(dataset, "gsam2", {"car", "person"}) == result.result["objects"]
    [operation] = DelegatedOperationService().list_operations(dataset_name=dataset.name)
    assert operation.run_state == "completed"
    assert operation.status.progress == 1.0


def test_mask_files_mode(dataset, model_params, tmp_path):
    mask_dir = tmp_path / "masks"
    params = ground_params(model_params, mask_storage="files", mask_dir=str(mask_dir))
    run(GROUND, dataset, params)
    detections = [d for s in dataset for d in s["gsam2"].detections]
    assert detections and all(d.mask is None and Path(d.mask_path).is_file() for d in detections)
    check_labels(dataset, "gsam2", {"car", "person"})
    written = sorted(mask_dir.rglob("*.png"))
    run(GROUND, dataset, params)  # a re-run replaces the files, it does not pile them up
    assert sorted(mask_dir.rglob("*.png")) == written


def test_missing_file_is_skipped_and_recorded(dataset, model_params):
    missing = dataset.skip(1).first()
    Path(missing.filepath).unlink()
    result = run(GROUND, dataset, ground_params(model_params))
    assert result.error is None
    assert result.result["processed"] == 4 and result.result["failed_count"] == 1
    assert result.result["failed"][0]["id"] == missing.id
    missing = dataset[missing.id]
    assert "no such file" in missing["gsam2_error"]
    assert missing["gsam2"] is None
    assert len(dataset.match(fo.ViewField("gsam2_error") != None)) == 1  # noqa: E711
    assert len(dataset.exists("gsam2")) == 4


def test_empty_prompt_fails_before_any_write(dataset, model_params):
    expect_user_error(run(GROUND, dataset, ground_params(model_params, prompt="  .  ")), "prompt '  .  ' is empty")
    assert "gsam2" not in dataset.get_field_schema()


def test_execute_refuses_an_empty_prompt_even_without_the_form(dataset, model_params):
    ctx = _context(dataset, ground_params(model_params, prompt=""))
    with pytest.raises(ValueError, match="is empty") as raised:
        foo.get_operator(GROUND).prepare(ctx)
    # FiftyOne imports the plugin under its own module name, so compare by name.
    assert type(raised.value).__name__ == "PromptError"
    assert "gsam2" not in dataset.get_field_schema()


def test_empty_prompt_is_flagged_in_the_form(dataset):
    inputs = foo.get_operator(GROUND).resolve_input(_context(dataset, {"prompt": ""}))
    assert inputs.type.properties["prompt"].invalid


def _context(dataset, params):
    from fiftyone.operators.executor import ExecutionContext

    return ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})


def test_view_with_zero_samples(dataset, model_params):
    empty = dataset.match(fo.ViewField("filepath") == "nothing")
    result = run(GROUND, empty, ground_params(model_params))
    assert result.error is None
    assert {key: result.result[key] for key in ("processed", "objects", "failed_count", "failed")} == {
        "processed": 0,
        "objects": 0,
        "failed_count": 0,
        "failed": [],
    }


def test_only_the_target_view_is_processed(dataset, model_params):
    view = dataset.limit(2)
    run(GROUND, view, ground_params(model_params))
    assert len(dataset.exists("gsam2")) == 2


def test_two_shards_process_every_sample_exactly_once(dataset, model_params):
    launched = run(GROUND, dataset, ground_params(model_params, num_shards=2))
    assert launched.error is None, launched.error
    assert len(launched.result["queued"]) == 2
    assert "Queued 2 background runs" in launched.result["summary"]
    assert "`fiftyone delegated launch`" in launched.result["summary"], "the dialog says what must run them"
    results = run_queue(dataset)
    processed = [r.result["processed"] for r in results]
    assert sorted(processed) == [2, 3] and sum(processed) == 5
    assert len(dataset.exists("gsam2")) == 5
    assert "gsam2_error" not in dataset.get_field_schema()


def test_shards_of_a_view_that_depends_on_the_output_field_cover_every_sample(tmp_path, model_params):
    """ "Label what has none yet": the view shrinks as shards write; the partition must not."""
    dataset = fo.Dataset()
    paths = []
    for index in range(12):
        path = tmp_path / f"s{index}.png"
        Image.fromarray(shapes_image(40, 50, seed=index)).save(path)
        paths.append(str(path))
    dataset.add_samples([fo.Sample(filepath=path) for path in paths])
    try:
        dataset.add_sample_field("gsam2", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
        unlabelled = dataset.exists("gsam2", False)
        launched = run(GROUND, unlabelled, ground_params(model_params, num_shards=3))
        assert launched.error is None, launched.error
        results = run_queue(dataset)
        assert sorted(r.result["processed"] for r in results) == [4, 4, 4]
        assert len(dataset.exists("gsam2")) == 12
    finally:
        DelegatedOperationService().delete_for_dataset(dataset._doc.id)
        dataset.delete()


def test_an_error_field_of_another_type_is_never_overwritten(dataset, model_params):
    dataset.set_values("gsam2_error", [float(i) for i in range(len(dataset))])
    expect_user_error(
        run(GROUND, dataset, ground_params(model_params)), "'gsam2_error' already exists and does not hold text"
    )
    assert dataset.values("gsam2_error") == [float(i) for i in range(len(dataset))]
    assert "gsam2" not in dataset.get_field_schema() or not dataset.exists("gsam2")


def test_a_users_text_field_named_like_the_error_field_is_never_cleared(dataset, model_params, tmp_path):
    notes = [f"note {index}" for index in range(len(dataset))]
    dataset.set_values("review_error", notes)  # a user's own text field
    for uri, params in (
        (GROUND, ground_params(model_params, label_field="review")),
        (GROUND, ground_params(model_params, label_field="review", mask_storage="files", mask_dir=str(tmp_path / "m"))),
        (GROUND, ground_params(model_params, label_field="review", num_shards=2)),
        (SEGMENT, {"source_field": "gt", "label_field": "review", **model_params}),
    ):
        if uri == SEGMENT:
            dataset.set_values("gt", [fo.Detections() for _ in range(len(dataset))])
        expect_user_error(run(uri, dataset, params), "'review_error' already exists and gsam2 did not create it")
        assert dataset.values("review_error") == notes
        assert "review" not in dataset.get_field_schema(), "refused before any write"
    assert not (tmp_path / "m").exists() and not DelegatedOperationService().list_operations(dataset_name=dataset.name)


def test_the_error_field_of_an_earlier_run_is_reused_and_cleared(dataset, model_params):
    missing = dataset.first()
    content = Path(missing.filepath).read_bytes()
    Path(missing.filepath).unlink()
    assert run(GROUND, dataset, ground_params(model_params, label_field="review")).result["failed_count"] == 1
    field = dataset.get_field("review_error")
    assert field.info == {"created_by": "gsam2", "role": "errors", "label_field": "review"}
    Path(missing.filepath).write_bytes(content)
    result = run(GROUND, dataset, ground_params(model_params, label_field="review"))
    assert result.error is None and result.result["processed"] == 5
    assert dataset.values("review_error") == [None] * 5, "the re-run cleared the old error"
    # A field made before fields were marked is known by the description every version wrote.
    field.info = None
    field.save()
    assert run(GROUND, dataset, ground_params(model_params, label_field="review")).error is None
    field.description = "my notes"
    field.save()
    expect_user_error(run(GROUND, dataset, ground_params(model_params, label_field="review")), "did not create it")


@pytest.mark.parametrize(
    ("label_field", "message"),
    [
        ("{outside}", "give a field name, not a path"),
        ("../x", "give a top-level field name"),
        ("sub/dir", "give a field name, not a path"),
        ("a\\b", "give a field name, not a path"),
        ("_private", "Field names cannot start with '_'"),
        ("a$b", "Field names cannot contain '\\$'"),
    ],
)
def test_a_label_field_that_is_not_a_plain_field_name_is_refused(dataset, model_params, tmp_path, label_field, message):
    outside = tmp_path / "out" / "elsewhere" / "evil"
    label_field = label_field.format(outside=outside)
    mask_dir = tmp_path / "out" / "masks"
    params = ground_params(model_params, label_field=label_field, mask_storage="files", mask_dir=str(mask_dir))
    expect_user_error(run(GROUND, dataset, params), f"label field .*: {message}")
    assert not (tmp_path / "out").exists(), "no mask written, inside the mask folder or out of it"
    assert label_field not in dataset.get_field_schema()


def test_mask_files_never_leave_the_mask_folder(tmp_path):
    from gsam2.core import InputError
    from gsam2.operators import dataset_writes

    mask_dir = tmp_path / "masks"
    for label_field, sample_id in (("../x", "0"), (str(tmp_path / "elsewhere"), "0"), ("gsam2", "../../x")):
        with pytest.raises(InputError, match="would be written outside"):
            dataset_writes.mask_paths_for(mask_dir, label_field, sample_id, 1)
        with pytest.raises(InputError, match="would be written outside"):
            dataset_writes.clear_mask_files(mask_dir, label_field, [sample_id])
    assert dataset_writes.mask_paths_for(mask_dir, "gsam2", "0", 1) == [mask_dir / "gsam2" / "0" / "0000.png"]


def test_a_mask_folder_that_cannot_hold_files_is_refused_before_the_run(dataset, model_params, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for mask_dir, label_field, reason in (
        (a_file, "gsam2", "Not a directory"),
        (a_file / "masks", "gsam2", "Not a directory"),
        # Root writes through file permissions: /sys refuses even root (a new folder, a file in an old one).
        ("/sys/gsam2-masks", "gsam2", "(Operation not permitted|Permission denied|Read-only file system)"),
        ("/sys", "kernel", "(Permission denied|Read-only file system)"),
    ):
        params = ground_params(model_params, label_field=label_field, mask_storage="files", mask_dir=str(mask_dir))
        error = expect_user_error(run(GROUND, dataset, params), f"mask folder '{mask_dir}': cannot write .*: {reason}")
        assert "Traceback" not in error
        assert label_field not in dataset.get_field_schema(), "refused before any write"
    assert a_file.read_text() == "not a folder"


def test_a_nan_source_box_is_that_samples_error(dataset, model_params):
    for index, sample in enumerate(dataset.sort_by("filepath")):
        box = [float("nan"), 0.1, 0.3, 0.3] if index == 1 else [0.1, 0.1, 0.3, 0.3]
        sample["ground_truth"] = fo.Detections(detections=[fo.Detection(label="box", bounding_box=box)])
        sample.save()
    params = {"source_field": "ground_truth", "label_field": "sam2", "batch_size": 4, **model_params}
    params.pop("detector")
    result = run(SEGMENT, dataset, params)
    assert result.result["processed"] == 4 and result.result["failed_count"] == 1
    [failure] = result.result["failed"]
    assert "invalid box" in failure["error"] and "nan" in failure["error"]
    ordered = dataset.sort_by("filepath")
    assert ordered.values("sam2_error")[1] == failure["error"]
    assert [labels is not None for labels in ordered.values("sam2")] == [True, False, True, True, True]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"box_threshold": float("nan")}, "box_threshold nan: must be a number between 0 and 1"),
        ({"box_threshold": -1}, "box_threshold -1.0: must be a number between 0 and 1"),
        ({"text_threshold": 1.5}, "text_threshold 1.5"),
        ({"batch_size": 0}, "batch_size 0: must be at least 1"),
        ({"batch_size": 2.5}, "batch_size 2.5: must be a whole number"),
        ({"num_shards": 2.5}, "background runs .num_shards. 2.5: must be a whole number of at least 1"),
        ({"num_shards": float("nan")}, "background runs .num_shards. nan"),
        ({"num_shards": 0}, "background runs .num_shards. 0"),
        ({"slice_size": 2.5}, "slice_size 2.5: must be a whole number"),
        ({"slice_size": -1}, "slice_size -1: must be a whole number of at least 0"),
        ({"slice_size": float("inf")}, "slice_size inf"),
        ({"slice_size": 64, "slice_overlap": float("nan")}, "slice_overlap nan"),
        ({"slice_size": 64, "slice_overlap": 8.5}, "slice_overlap 8.5"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(dataset, model_params, overrides, message):
    # Without the form (a delegated run, a script): the run itself refuses, nothing is queued.
    with pytest.raises(ValueError, match=message):
        foo.get_operator(GROUND).prepare(_context(dataset, ground_params(model_params, **overrides)))
    assert not DelegatedOperationService().list_operations(dataset_name=dataset.name)
    expect_user_error(run(GROUND, dataset, ground_params(model_params, **overrides)), message)  # in the App
    assert "gsam2" not in dataset.get_field_schema()


def test_unset_thresholds_take_the_defaults(dataset, model_params):
    result = run(GROUND, dataset, ground_params(model_params, box_threshold=None, text_threshold=None))
    assert result.result["processed"] == 5


def test_image_operators_refuse_a_video_dataset_up_front(tmp_path, model_params):
    from .media import moving_squares, write_video

    videos = fo.Dataset()
    videos.add_sample(fo.Sample(filepath=str(write_video(tmp_path / "v.mp4", moving_squares(3)))))
    try:
        expect_user_error(
            run(GROUND, videos, ground_params(model_params)),
            "holds videos: this operator labels images .use track_video",
        )
        assert "gsam2" not in videos.get_field_schema()
    finally:
        videos.delete()


def test_segment_with_sam2_keeps_labels_and_links_sources(dataset, model_params):
    for sample in dataset:
        sample["ground_truth"] = fo.Detections(
            detections=[
                fo.Detection(label="box", bounding_box=[0.1, 0.2, 0.3, 0.4]),
                fo.Detection(label="other", bounding_box=[0.5, 0.5, 0.25, 0.25], confidence=0.7),
            ]
        )
        sample.save()
    first = dataset.first()  # a sample with no boxes gets an empty field, not an error
    first["ground_truth"] = None
    first.save()
    params = {"source_field": "ground_truth", "label_field": "sam2", "batch_size": 2, **model_params}
    params.pop("detector")
    result = run(SEGMENT, dataset, params)
    assert result.error is None, result.error
    assert result.result["objects"] == 8
    for sample in dataset:
        source = {d.id: d for d in (sample.ground_truth.detections if sample.ground_truth else [])}
        outputs = sample.sam2.detections
        assert len(outputs) == len(source)
        for output in outputs:
            original = source[output.source_id]
            assert output.label == original.label
            assert output.confidence == original.confidence
            np.testing.assert_allclose(output.bounding_box, original.bounding_box, atol=2 / 64)
    check_labels(dataset, "sam2", {"box", "other"}, require_confidence=False)


def test_segment_with_sam2_delegated_and_bad_source(dataset, model_params):
    dataset.set_values("gt", [fo.Detections(detections=[fo.Detection(label="a", bounding_box=[0, 0, 0.5, 0.5])])] * 5)
    params = {"source_field": "gt", "label_field": "sam2", **model_params}
    run(SEGMENT, dataset, params, delegate=True)
    run_queue(dataset)
    assert dataset.count("sam2.detections") == 5
    expect_user_error(run(SEGMENT, dataset, dict(params, source_field="nope")), "source_field")


def test_python_one_liner(dataset, model_params):
    op = foo.get_operator(GROUND)
    result = op(
        dataset,
        "car",
        label_field="from_python",
        box_threshold=0.0,
        text_threshold=0.0,
        detector=model_params["detector"],
        segmenter=model_params["segmenter"],
        device="cpu",
    )
    assert result["processed"] == 5 and result["failed"] == []
    assert len(dataset.exists("from_python")) == 5


def test_operators_list_cli_shows_both(tmp_path):
    fiftyone_cli = Path(sys.executable).parent / "fiftyone"  # the console script beside this interpreter
    result = subprocess.run(
        [str(fiftyone_cli), "operators", "list"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert GROUND in result.stdout and SEGMENT in result.stdout


def test_interrupted_run_keeps_finished_batches(dataset, model_params, monkeypatch):
    operator = foo.get_operator(GROUND)
    module = sys.modules[type(operator).__module__]  # the plugin's own copy of the module
    real_pipeline = module.Run.label_images  # the run's labelling (core/run.py), as the plugin's copy imports it
    calls = []

    class WorkerStopped(BaseException):
        """The run stops here (a stop signal, the process ending); an ordinary error only fails its samples."""

    def dies_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WorkerStopped("worker stopped")
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(module.Run, "label_images", dies_on_second_batch)
    with pytest.raises(WorkerStopped, match="worker stopped"):
        run(GROUND, dataset, ground_params(model_params, batch_size=2))
    assert len(dataset.exists("gsam2")) == 2, "the first batch was written before the failure"
    monkeypatch.setattr(module.Run, "label_images", real_pipeline)
    run(GROUND, dataset, ground_params(model_params, batch_size=2))
    assert len(dataset.exists("gsam2")) == 5


def test_models_load_once_per_worker_process_not_per_run(dataset, model_params, monkeypatch):
    import transformers

    loads = []
    real = transformers.Sam2Model.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args[0])
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.Sam2Model, "from_pretrained", classmethod(counting))
    # A checkpoint path no earlier test used, so the first run must load it.
    fresh = Path(model_params["segmenter"]).parent / "sam2-copy"
    if not fresh.exists():
        import shutil

        shutil.copytree(model_params["segmenter"], fresh)
    params = ground_params(model_params, segmenter=str(fresh), batch_size=1)
    run(GROUND, dataset, params)
    run(GROUND, dataset, params, delegate=True)
    run_queue(dataset)
    assert loads == [str(fresh)], "one load for five batches and two runs"


def test_a_run_whose_worker_was_killed_is_marked_failed_by_the_next_run(dataset, model_params):
    """kill -9 of a delegated worker leaves its run 'running' forever; the next run of the operator ends it."""
    from datetime import datetime, timedelta

    from fiftyone.operators.executor import ExecutionRunState

    service = DelegatedOperationService()
    launched = run(GROUND, dataset, ground_params(model_params), delegate=True)
    [queued] = service.get_queued_operations(dataset_name=dataset.name)
    service.set_running(queued.id)
    # What a killed worker leaves behind: started an hour ago, silent since.
    an_hour_ago = datetime.utcnow() - timedelta(hours=1)
    service._repo._collection.update_one(
        {"_id": queued.id}, {"$set": {"started_at": an_hour_ago, "updated_at": an_hour_ago}}
    )
    recent = run(GROUND, dataset, ground_params(model_params, label_field="other"), delegate=True)
    assert launched.error is None and recent.error is None
    service.set_running(service.get_queued_operations(dataset_name=dataset.name)[0].id)  # a live one, just started
    result = run(GROUND, dataset, ground_params(model_params, label_field="third"))
    assert result.result["processed"] == 5
    abandoned = service.get(queued.id)
    assert abandoned.run_state == ExecutionRunState.FAILED
    assert "the worker stopped without finishing" in abandoned.result.error
    running = service.get_running_operations(dataset_name=dataset.name)
    assert len(running) == 1, "a run that is alive is left alone"


# ---------------------------------------------------------------- the forms, as the App resolves them


def form(uri, dataset, params):
    """The form's properties for ``params``, as FiftyOne resolves them for the App."""
    return foo.get_operator(uri).resolve_input(_context(dataset, params)).type.properties


def test_form_order_and_help_follow_the_detector(dataset):
    names = list(form(GROUND, dataset, {}))
    assert names.index("detector") < names.index("prompt"), "what decides the prompt comes first"
    florence = form(GROUND, dataset, {"detector": "florence2", "task": "phrase_grounding"})
    assert list(florence).index("task") < list(florence).index("prompt")
    assert "sentence" in florence["prompt"].view.description and "period" not in florence["prompt"].view.description
    assert "prompt" not in form(GROUND, dataset, {"detector": "florence2", "task": "object_detection"})
    assert "segmenter" not in form(GROUND, dataset, {"detector": "sam3"}), "SAM 3 makes its own masks"


def test_form_fields_a_user_reads(dataset):
    properties = form(GROUND, dataset, {"device": "cpu"})
    for name in ("box_threshold", "text_threshold"):
        assert type(properties[name].view).__name__ != "SliderView"
        assert properties[name].view.label.endswith("(0-1)")
    assert properties["batch_size"].default == 1, "one image per batch on a CPU"
    assert properties["num_shards"].default == 1
    notice = properties["run_notice"].view.label
    if fo.config.allow_legacy_orchestrators:
        assert "fiftyone delegated launch" in notice
    else:
        assert "FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true" in notice
    assert "_caption" in form(f"{PLUGIN}/auto_label", dataset, {})["caption_task"].view.description
    assert len(foo.get_operator(f"{PLUGIN}/florence2").config.label) <= 40, "the operator browser cuts long names"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"box_threshold": 2}, "box_threshold", "box_threshold 2.0: must be a number between 0 and 1"),
        ({"batch_size": 0}, "batch_size", "batch_size 0"),
        ({"num_shards": 2.5}, "num_shards", "background runs (num_shards) 2.5"),
        ({"slice_size": -1}, "slice_size", "slice_size -1: must be a whole number of at least 0"),
        ({"slice_size": 64, "slice_overlap": float("nan")}, "slice_overlap", "slice_overlap nan"),
        ({"segmenter": "/no/such/sam2"}, "segmenter", "'/no/such/sam2': no such file or folder"),
        ({"detector": "./models/gdino"}, "detector", "'./models/gdino': no such file or folder"),
    ],
)
def test_form_flags_a_mistake_under_its_field(dataset, params, field, message):
    prop = form(GROUND, dataset, params)[field]
    assert prop.invalid and message in prop.error_message


def test_a_hub_id_is_not_checked_in_the_form(dataset):
    assert not form(GROUND, dataset, {"segmenter": "facebook/sam2.1-hiera-large"})["segmenter"].invalid


def test_image_operators_refuse_a_video_dataset_in_the_form(tmp_path):
    videos = fo.Dataset()
    videos.media_type = "video"
    try:
        for uri in (GROUND, SEGMENT, f"{PLUGIN}/auto_label", f"{PLUGIN}/florence2"):
            error = form(uri, videos, {})["media_error"]
            assert error.invalid and "holds videos: this operator labels images" in error.error_message
    finally:
        videos.delete()


def test_python_call_runs_in_the_callers_thread(dataset, model_params, monkeypatch):
    """Not through FiftyOne's immediate path, whose 10-minute timeout leaves the work running after it raises."""
    import threading

    operator = foo.get_operator(GROUND)
    module = sys.modules[type(operator).__module__]
    real_pipeline, threads = module.Run.label_images, []

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return real_pipeline(*args, **kwargs)

    monkeypatch.setattr(module.Run, "label_images", recording)
    summary = operator(dataset, "car.", label_field="here", box_threshold=0.0, **model_params)
    assert threads and set(threads) == {threading.current_thread()}
    assert summary["processed"] == 5 and "samples labelled" in summary["summary"]
