"""Dataset formats: every writer read back by an independent reader, and its masks equal the JSON's."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from gsam2.core import rle_to_mask
from gsam2.core.formats import ClassList, CocoWriter, MotsWriter, MotWriter, YoloWriter, YtvisWriter, mask_polygon
from gsam2.core.formats.video import exclusive_masks
from gsam2.core.masks import mask_to_rle

from .conftest import REPO_ROOT, shapes_image
from .test_cli import gsam2, model_args

EXAMPLES = REPO_ROOT / "examples" / "images"


def fill_polygon(polygon_relative: np.ndarray, width: int, height: int) -> np.ndarray:
    """Rasterise a YOLO polygon (relative coordinates) back to pixels, as Ultralytics' polygon2mask does."""
    points = np.round(polygon_relative.reshape(-1, 2) * [width, height]).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


# ------------------------------------------------------------------------------------------ unit level


@pytest.mark.parametrize(
    "shape",
    ["square", "two_pieces", "ring", "edge"],
)
def test_a_mask_polygon_fills_back_to_the_same_mask(shape):
    mask = np.zeros((40, 60), bool)
    if shape == "square":
        mask[5:20, 10:30] = True
    elif shape == "two_pieces":
        mask[5:15, 5:15] = True
        mask[25:35, 40:55] = True
    elif shape == "ring":
        mask[5:35, 5:35] = True
        mask[15:25, 15:25] = False
    else:  # touching the image's border
        mask[0:40, 50:60] = True
    polygon = mask_polygon(mask)
    filled = fill_polygon(polygon / [60, 40], 60, 40)
    if shape in ("square", "edge"):
        assert np.array_equal(filled, mask)
    elif shape == "ring":  # YOLO polygons carry no holes: readers draw them with cv2.fillPoly, which fills them
        assert np.array_equal(filled, square(40, 60, 5, 5, 30))
    else:  # pieces and holes are joined by zero-width seams: at most the seam's pixels differ
        assert not (mask & ~filled).any()
        assert np.logical_xor(filled, mask).sum() <= 30
        iou = (filled & mask).sum() / (filled | mask).sum()
        assert iou > 0.9


def test_an_empty_mask_has_no_polygon():
    assert mask_polygon(np.zeros((5, 5), bool)) is None


def test_class_list_keeps_the_prompt_order_then_adds_new_names():
    classes = ClassList(["car", "person"])
    assert classes.index("dog") == 2 and classes.index("car") == 0
    assert [c["id"] for c in classes.coco_categories()] == [1, 2, 3]


def objects_on(masks: list[np.ndarray], names: list[str], ids: list[int] | None = None) -> list[dict]:
    objects = []
    for i, (mask, name) in enumerate(zip(masks, names)):
        ys, xs = np.nonzero(mask)
        obj = {
            "class_name": name,
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
            "score": round(0.9 - 0.1 * i, 4),
            "segmentation": mask_to_rle(mask),
        }
        if ids is not None:
            obj["id"] = ids[i]
        objects.append(obj)
    return objects


def mask_box(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def square(height, width, y, x, size):
    mask = np.zeros((height, width), bool)
    mask[y : y + size, x : x + size] = True
    return mask


def test_coco_writer_streams_a_file_pycocotools_reads(tmp_path):
    writer = CocoWriter(tmp_path / "annotations.json", ClassList(["cat", "dog"]))
    masks = [square(30, 40, 2, 3, 10), square(30, 40, 15, 20, 8)]
    writer.add_image("a.jpg", 40, 30, objects_on(masks, ["dog", "bird"]))
    writer.add_image("b.jpg", 40, 30, [])
    assert not (tmp_path / "annotations.json").exists(), "assembled at close, never seen half-written"
    writer.close()
    coco = COCO(str(tmp_path / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog", "bird"]
    assert [i["file_name"] for i in coco.loadImgs(coco.getImgIds())] == ["a.jpg", "b.jpg"]
    annotations = coco.loadAnns(coco.getAnnIds())
    assert [a["category_id"] for a in annotations] == [2, 3]
    for annotation, mask in zip(annotations, masks):
        assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)
        assert annotation["area"] == mask.sum() and annotation["iscrowd"] == 0
    assert annotations[0]["bbox"] == [3.0, 2.0, 10.0, 10.0]
    assert list(tmp_path.iterdir()) == [tmp_path / "annotations.json"], "no temporary file left"


def test_coco_writer_memory_does_not_grow_with_the_images(tmp_path):
    """``CocoWriter`` keeps no annotation in memory: 3,000 images' worth (about 2 MB of JSON) add almost nothing."""
    import tracemalloc

    masks = [square(120, 160, 10 + 7 * k, 5 + 11 * k, 30 + k) for k in range(3)]
    objects = objects_on(masks, ["cat", "dog", "bird"])
    for obj in objects:  # a realistic RLE: long counts strings
        obj["segmentation"] = {**obj["segmentation"], "counts": obj["segmentation"]["counts"] * 20}
    writer = CocoWriter(tmp_path / "annotations.json", ClassList(["cat", "dog", "bird"]))
    writer.add_image("warm-up.jpg", 160, 120, objects)  # first-call allocations (caches, buffers) before measuring
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):
            writer.add_image(f"{i:05d}.jpg", 160, 120, objects, extra_key=i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    writer.close()
    size = (tmp_path / "annotations.json").stat().st_size
    assert size > 2_000_000
    assert grown < 100_000, f"{grown} bytes kept for {size} bytes of file"
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert len(data["images"]) == 3001 and len(data["annotations"]) == 9003
    assert [a["id"] for a in data["annotations"]] == list(range(1, 9004))


def test_mot_mots_and_ytvis_writers_read_back(tmp_path):
    from gsam2.core.track_metrics import read_mot, read_mots

    classes = ClassList(["car"])
    mot, mots = MotWriter(tmp_path / "mot" / "clip.txt"), MotsWriter(tmp_path / "mots" / "clip.txt", classes)
    ytvis = YtvisWriter(tmp_path / "ytvis" / "clip.json", "clip", classes)
    frames = []
    for t in range(3):
        masks = [square(30, 40, 2, 3 + t, 10)] + ([square(30, 40, 8, 8, 10)] if t != 1 else [])
        objects = objects_on(masks, ["car", "person"][: len(masks)], [4, 9][: len(masks)])
        frames.append(objects)
        for writer in (mot, mots, ytvis):
            writer.add_frame(t + 10, objects)  # the video's frame numbers, not positions
    for writer in (mot, mots, ytvis):
        writer.close()

    [boxes] = read_mot(tmp_path / "mot").values()
    assert len(boxes) == 13 and boxes[9] == [] and boxes[10][0].track_id == 4  # frame index 10 is MOT frame 11
    assert boxes[11][0].box == (4.0, 2.0, 10.0, 10.0) and len(boxes[11]) == 1
    [masks] = read_mots(tmp_path / "mots").values()
    for t, objects in enumerate(frames):
        expected = exclusive_masks(objects)
        read = masks[t + 10]
        assert [o.track_id for o in read] == [o["id"] for o in objects]
        assert [o.class_id for o in read] == [1, 2][: len(objects)]
        for obj, mask in zip(read, expected):
            assert np.array_equal(mask_utils.decode(obj.mask).astype(bool), mask)
    # Frame 10 and 12: the two masks overlap; the overlap went to the higher score (id 4), so 9 lost it.
    assert not np.array_equal(expected[1], rle_to_mask(frames[2][1]["segmentation"]))

    data = json.loads((tmp_path / "ytvis" / "clip.json").read_text())
    assert data["videos"][0]["length"] == 3 and data["videos"][0]["file_names"][0] == "clip/00010.jpg"
    assert [c["name"] for c in data["categories"]] == ["car", "person"]
    car, person = data["annotations"]
    assert (car["track_id"], car["category_id"], person["track_id"]) == (4, 1, 9)
    assert person["segmentations"][1] is None and person["bboxes"][1] is None
    for t, objects in enumerate(frames):
        assert np.array_equal(rle_to_mask(car["segmentations"][t]), rle_to_mask(objects[0]["segmentation"]))
        assert car["bboxes"][t] == [3.0 + t, 2.0, 10.0, 10.0]


def test_yolo_writer_labels_load_in_fiftyone(tmp_path):
    import fiftyone as fo

    (tmp_path / "images").mkdir()
    writer = YoloWriter(tmp_path, ClassList(["cat"]))
    masks = [square(30, 40, 2, 3, 10), square(30, 40, 15, 20, 8)]
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    writer.add_image("a", 40, 30, objects_on(masks, ["cat", "dog"]))
    writer.close()
    lines = (tmp_path / "labels" / "a.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    for line, mask in zip(lines, masks):
        assert np.array_equal(fill_polygon(np.array(line.split()[1:], float), 40, 30), mask)
    dataset = fo.Dataset.from_dir(
        dataset_dir=str(tmp_path),
        dataset_type=fo.types.YOLOv5Dataset,
        yaml_path="data.yaml",
        split="val",
        label_type="instances",
    )
    try:
        [sample] = list(dataset)
        labels = sample["ground_truth"].detections
        assert [d.label for d in labels] == ["cat", "dog"]
        assert labels[0].bounding_box == pytest.approx([3 / 40, 2 / 30, 9 / 40, 9 / 30], abs=1e-4)
    finally:
        dataset.delete()


# ------------------------------------------------------------------------------------------ the CLI


def test_image_formats_from_the_cli_round_trip(tmp_path, tiny_models):
    import fiftyone as fo

    out = tmp_path / "out"
    result = gsam2(
        "image", "--prompt", "cat. person. cup.", "--input", str(EXAMPLES), "--output", str(out),
        "--box-threshold", "0", "--text-threshold", "0", "--no-draw", "--quiet",
        "--format", "json", "--format", "coco", "--format", "yolo", *model_args(tiny_models),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stems = ["astronaut", "cat", "coffee"]
    records = {stem: json.loads((out / f"{stem}.json").read_text()) for stem in stems}
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{s}.jpg" for s in stems]
    assert (out / "images" / "cat.jpg").resolve() == (EXAMPLES / "cat.jpg").resolve()

    coco = COCO(str(out / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())][:3] == ["cat", "person", "cup"]
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    images = {image["file_name"]: image for image in coco.loadImgs(coco.getImgIds())}
    assert sorted(images) == [f"{s}.jpg" for s in stems]
    yaml_names = __import__("yaml").safe_load((out / "data.yaml").read_text())["names"]
    for stem, record in records.items():
        image = images[f"{stem}.jpg"]
        assert (image["width"], image["height"]) == (record["img_width"], record["img_height"])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(annotations) == len(record["annotations"]) > 0
        lines = (out / "labels" / f"{stem}.txt").read_text().splitlines()
        assert len(lines) == len(annotations)
        for annotation, obj, line in zip(annotations, record["annotations"], lines):
            mask = rle_to_mask(obj["segmentation"])
            assert np.array_equal(coco.annToMask(annotation).astype(bool), mask)  # COCO: exactly the JSON's
            assert names[annotation["category_id"]] == obj["class_name"] == yaml_names[int(line.split()[0])]
            x1, y1, x2, y2 = obj["bbox"]
            assert annotation["detector_bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)
            left, top, right, bottom = mask_box(mask)  # COCO's bbox: the mask's tight box
            assert annotation["bbox"] == [left, top, right - left, bottom - top]
            # YOLO: the outline of every piece (holes filled, pieces joined by seams): it covers the mask
            filled = fill_polygon(np.array(line.split()[1:], float), image["width"], image["height"])
            if mask.any():
                assert not (mask & ~filled).any()
                ys, xs = np.nonzero(filled)
                assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == list(mask_box(mask))

    coco_dataset = fo.Dataset.from_dir(
        dataset_type=fo.types.COCODetectionDataset,
        data_path=str(out / "images"),
        labels_path=str(out / "annotations.json"),
        label_types="segmentations",
        label_field="segmentations",
    )
    yolo_dataset = fo.Dataset.from_dir(
        dataset_dir=str(out), dataset_type=fo.types.YOLOv5Dataset, yaml_path="data.yaml", split="val"
    )
    try:
        assert len(coco_dataset) == len(yolo_dataset) == 3
        for sample in coco_dataset:
            record = records[Path(sample.filepath).stem]
            detections = sample["segmentations"].detections
            assert [d.label for d in detections] == [a["class_name"] for a in record["annotations"]]
            for detection, obj in zip(detections, record["annotations"]):
                full = np.zeros((record["img_height"], record["img_width"]), bool)  # the crop back in the frame
                x, y, w, h = detection.bounding_box
                left, top = round(x * record["img_width"]), round(y * record["img_height"])
                crop = detection.get_mask()
                full[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
                assert np.array_equal(full, rle_to_mask(obj["segmentation"]))
        for sample in yolo_dataset:
            record = records[Path(sample.filepath).stem]
            assert [d.label for d in sample["ground_truth"].detections] == [
                a["class_name"] for a in record["annotations"]
            ]
    finally:
        coco_dataset.delete()
        yolo_dataset.delete()

    # A second run replaces its own files; only json by default, coco alone writes no per-image JSON.
    again = tmp_path / "again"
    result = gsam2(
        "image", "--prompt", "cat.", "--input", str(EXAMPLES / "cat.jpg"), "--output", str(again),
        "--no-draw", "--quiet", "--format", "coco", *model_args(tiny_models),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in again.iterdir()) == ["annotations.json", "images"]
    result = gsam2(
        "image", "--prompt", "cat.", "--input", str(EXAMPLES / "cat.jpg"), "--output", str(again),
        "--no-draw", "--quiet", "--format", "coco", *model_args(tiny_models),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_classes_without_a_prompt_are_numbered_as_the_images_bring_them(tmp_path):
    """``autolabel`` and prompt-free detectors: no prompt, so COCO and YOLO number the phrases in the order the
    images (in input order) bring them, alike; with a prompt its phrases come first, in prompt order."""
    from gsam2.core.formats import ImageDatasetWriter

    masks = [square(30, 40, 2, 3, 10), square(30, 40, 15, 20, 8)]
    records = [
        {"img_width": 40, "img_height": 30, "annotations": objects_on(masks, ["dog", "cat"])},
        {"img_width": 40, "img_height": 30, "annotations": objects_on(masks, ["bird", "dog"])},
    ]
    for phrases, expected in (((), ["dog", "cat", "bird"]), (("cat", "car"), ["cat", "car", "dog", "bird"])):
        out = tmp_path / f"out-{len(phrases)}"
        (out / "in").mkdir(parents=True)
        writer = ImageDatasetWriter(out, ["coco", "yolo"], phrases)
        for i, record in enumerate(records):
            image = out / "in" / f"im{i}.png"
            Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(image)
            writer.add(image, f"im{i}", record)
        writer.close()
        coco = COCO(str(out / "annotations.json"))
        assert [c["name"] for c in coco.loadCats(sorted(coco.getCatIds()))] == expected
        yaml_names = __import__("yaml").safe_load((out / "data.yaml").read_text())["names"]
        assert list(yaml_names.values()) == expected
        for i, record in enumerate(records):
            lines = (out / "labels" / f"im{i}.txt").read_text().splitlines()
            [image] = [im for im in coco.loadImgs(coco.getImgIds()) if im["file_name"] == f"im{i}.png"]
            annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            names = [o["class_name"] for o in record["annotations"]]
            assert [expected[a["category_id"] - 1] for a in annotations] == names
            assert [expected[int(line.split()[0])] for line in lines] == names


def test_autolabel_writes_the_formats(tmp_path, tiny_models):
    """``gsam2 autolabel --format``: the same dataset files as ``gsam2 image`` (their class numbering: above)."""
    images = tmp_path / "in"
    images.mkdir()
    for index, (height, width) in enumerate([(120, 160), (96, 80)]):
        Image.fromarray(shapes_image(height, width, seed=index)).save(images / f"image{index}.png")
    out = tmp_path / "out"
    result = gsam2(
        "autolabel", "--input", str(images), "--output", str(out), "--device", "cpu", "--quiet", "--no-draw",
        "--detector", f"florence2:{tiny_models['florence2']}", "--segmenter", str(tiny_models["sam2"]),
        "--caption", "caption", "--format", "json", "--format", "coco", "--format", "yolo",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads((out / f"image{i}.json").read_text()) for i in range(2)]
    coco = COCO(str(out / "annotations.json"))
    assert sorted(im["file_name"] for im in coco.loadImgs(coco.getImgIds())) == ["image0.png", "image1.png"]
    assert len(coco.getAnnIds()) == sum(len(r["annotations"]) for r in records)
    for i, record in enumerate(records):
        assert len((out / "labels" / f"image{i}.txt").read_text().splitlines()) == len(record["annotations"])
    assert (out / "data.yaml").is_file() and (out / "images" / "image0.png").resolve() == (images / "image0.png").resolve()


def test_dataset_files_gsam2_did_not_write_are_never_replaced(tmp_path, tiny_models):
    image = tmp_path / "in" / "shapes.png"
    image.parent.mkdir()
    Image.fromarray(shapes_image()).save(image)
    for fmt, foreign in (("coco", "annotations.json"), ("yolo", "data.yaml"), ("yolo", "images/shapes.png")):
        out = tmp_path / f"out-{fmt}-{Path(foreign).name}"
        (out / foreign).parent.mkdir(parents=True, exist_ok=True)
        (out / foreign).write_text("mine")
        result = gsam2(
            "image", "--prompt", "car.", "--input", str(image), "--output", str(out), "--format", fmt,
            *model_args(tiny_models),
        )  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"error: --output would replace {out / foreign}, which gsam2 did not write: move it away, or choose "
            "another output folder"
        )
        assert (out / foreign).read_text() == "mine"


def test_an_unknown_format_is_a_usage_error(tmp_path):
    result = gsam2("image", "--prompt", "car.", "--input", str(tmp_path), "--output", str(tmp_path), "--format", "voc")
    assert result.returncode == 2 and "invalid choice: 'voc'" in result.stderr


def test_video_formats_from_the_cli_round_trip(tmp_path, tiny_models):
    from gsam2.core.track_metrics import read_mot, read_mots

    from .media import moving_squares, write_video
    from .test_video import gsam2_video

    video = write_video(tmp_path / "clip.mp4", moving_squares(12))
    out = tmp_path / "out"
    result = gsam2_video(
        tiny_models, "--prompt", "red square. car.", "--input", str(video), "--output", str(out),
        "--box-threshold", "0.7", "--text-threshold", "0", "--step", "5", "--no-draw", "--stride", "2",
        "--format", "jsonl", "--format", "mot", "--format", "mots", "--format", "ytvis",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == list(range(0, 12, 2))
    assert any(line["objects"] for line in lines), "the tiny models find something at this threshold"
    [boxes] = read_mot(out / "mot").values()  # trackeval's own text reader underneath
    [masks] = read_mots(out / "mots").values()
    ytvis = json.loads((out / "ytvis" / "clip.json").read_text())
    assert ytvis["videos"][0]["length"] == 6 and (ytvis["videos"][0]["height"], ytvis["videos"][0]["width"]) == (64, 96)
    categories = {c["id"]: c["name"] for c in ytvis["categories"]}
    assert list(categories.values())[:2] == ["red square", "car"]
    tracks = {a["track_id"]: a for a in ytvis["annotations"]}
    for position, line in enumerate(lines):
        frame = line["frame_index"]  # MOT/MOTS frame frame + 1, read back as list position frame
        objects = line["objects"]
        assert [o.track_id for o in boxes[frame]] == [o["id"] for o in objects]
        for read, o in zip(boxes[frame], objects):
            x1, y1, x2, y2 = o["bbox"]
            assert read.box == pytest.approx((x1, y1, x2 - x1, y2 - y1), abs=0.011)
        exclusive = [m for m in exclusive_masks(objects) if m.any()]
        assert len(masks[frame]) == len(exclusive)
        for read, mask in zip(masks[frame], exclusive):
            assert np.array_equal(mask_utils.decode(read.mask).astype(bool), mask)
        for o in objects:  # YouTube-VIS keeps every mask as the JSONL has it
            track = tracks[o["id"]]
            assert np.array_equal(rle_to_mask(track["segmentations"][position]), rle_to_mask(o["segmentation"]))
        for track_id, track in tracks.items():
            if track_id not in {o["id"] for o in objects}:
                assert track["segmentations"][position] is None
    # The tracks score perfectly against themselves through gsam2 eval.
    for folder in ("mot", "mots"):
        result = gsam2("eval", "--pred", str(out / folder), "--gt", str(out / folder), "--json")
        assert result.returncode == 0, result.stderr
        scores = json.loads(result.stdout)
        assert (scores["HOTA"], scores["IDF1"], scores["IDSW"]) == (pytest.approx(1.0), pytest.approx(1.0), 0)


def test_cvat_track_save_copy_writes_the_video_formats(tiny_models, monkeypatch, capsys, tmp_path):
    """``gsam2 cvat track --save-copy OUT --format ...``: the uploaded tracks also on disk, via the same writers."""
    import cvat_sdk

    from gsam2 import cli
    from gsam2.nuclio.rest import task_labeling

    from .cvat_standin import CvatStandIn
    from .test_cvat_labels import IMAGE, TASK_ID

    frames = [np.roll(IMAGE, 3 * k, axis=1) for k in range(3)]
    labels = [{"id": 30, "name": "car", "type": "polygon"}, {"id": 31, "name": "red square", "type": "mask"}]
    standin = CvatStandIn("token").start()
    out = tmp_path / "copy"
    try:
        standin.add_task(TASK_ID, frames, labels, chunk_size=2)
        client = cvat_sdk.make_client(host="http://127.0.0.1", port=standin.port, access_token="token")
        monkeypatch.setattr(task_labeling, "connect", lambda: client)
        status = cli.main(["cvat", "track", "--task", str(TASK_ID), "--tracker", f"edgetam:{tiny_models['edgetam-video']}",
                           "--step", "2", "--detector", str(tiny_models["grounding-dino"]), "--segmenter",
                           str(tiny_models["sam2"]), "--device", "cpu", "--quiet", "--box-threshold", "0",
                           "--text-threshold", "0", "--save-copy", str(out), "--format", "jsonl", "--format", "mot",
                           "--format", "ytvis"])  # fmt: skip
    finally:
        standin.stop()
    captured = capsys.readouterr()
    assert status == 0, captured.err
    tracks = standin.tasks[TASK_ID].annotations["tracks"]
    lines = [json.loads(line) for line in (out / f"task{TASK_ID}.jsonl").read_text().splitlines()]
    assert [line["frame_index"] for line in lines] == [0, 1, 2]
    ids = {o["id"] for line in lines for o in line["objects"]}
    assert len(ids) == len(tracks) > 0
    mot_ids = {int(row.split(",")[1]) for row in (out / "mot" / f"task{TASK_ID}.txt").read_text().splitlines()}
    assert mot_ids == ids
    ytvis = json.loads((out / "ytvis" / f"task{TASK_ID}.json").read_text())
    assert {a["track_id"] for a in ytvis["annotations"]} == ids
    assert (ytvis["videos"][0]["height"], ytvis["videos"][0]["width"]) == IMAGE.shape[:2]
    for line in lines:  # the copy's masks are the uploaded run's: YouTube-VIS holds each JSONL mask as it is
        for o in line["objects"]:
            [track] = [a for a in ytvis["annotations"] if a["track_id"] == o["id"]]
            assert np.array_equal(rle_to_mask(track["segmentations"][line["frame_index"]]), rle_to_mask(o["segmentation"]))


def test_cvat_track_format_without_save_copy_is_a_usage_error(capsys):
    from gsam2 import cli

    status = cli.main(["cvat", "track", "--task", "1", "--format", "mot"])
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip() == "error: --format chooses what --save-copy OUT writes: give --save-copy OUT too"


def test_sam3_tracks_write_the_formats_with_the_prompts_classes(tmp_path, tiny_models):
    """``gsam2 video --tracker sam3 --format mots --format ytvis``: SAM 3's own phrases are the classes, in prompt order."""
    from gsam2.core.track_metrics import read_mots

    from .media import moving_squares, write_video

    video = write_video(tmp_path / "squares.mp4", moving_squares(4))
    out = tmp_path / "out"
    result = gsam2(
        "video", "--tracker", f"sam3:{tiny_models['sam3-video']}", "--prompt", "red square. blue disc.",
        "--input", str(video), "--output", str(out), "--box-threshold", "0", "--device", "cpu", "--quiet",
        "--no-draw", "--format", "jsonl", "--format", "mots", "--format", "ytvis",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (out / "squares.jsonl").read_text().splitlines()]
    assert any(line["objects"] for line in lines)
    ytvis = json.loads((out / "ytvis" / "squares.json").read_text())
    assert [c["name"] for c in ytvis["categories"]][:2] == ["red square", "blue disc"]
    names = {c["id"]: c["name"] for c in ytvis["categories"]}
    tracks = {a["track_id"]: a for a in ytvis["annotations"]}
    [masks] = read_mots(out / "mots").values()
    for position, line in enumerate(lines):
        for o in line["objects"]:
            assert names[tracks[o["id"]]["category_id"]] == o["class_name"]
            assert np.array_equal(rle_to_mask(tracks[o["id"]]["segmentations"][position]), rle_to_mask(o["segmentation"]))
        read = {m.track_id: m for m in masks[line["frame_index"]]}
        for o, mask in zip(line["objects"], exclusive_masks(line["objects"])):
            if mask.any():
                assert names[read[o["id"]].class_id] == o["class_name"]
                assert np.array_equal(mask_utils.decode(read[o["id"]].mask).astype(bool), mask)
