"""``gsam2 eval``: COCO AP and tracking metrics, on files the format writers make, with hand-computed figures."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from gsam2.cli.main import main
from gsam2.core.formats import ClassList, CocoWriter, MotsWriter, MotWriter
from gsam2.core.masks import mask_to_rle

#: Track metrics come from trackeval (the `eval` extra; .ci/run installs it, so CI runs these tests).
needs_trackeval = pytest.mark.skipif(
    importlib.util.find_spec("trackeval") is None,
    reason='trackeval is not installed: pip install --no-deps "trackeval>=1.3" scipy tabulate',
)


def square(y, x, size, height=40, width=60):
    mask = np.zeros((height, width), bool)
    mask[y : y + size, x : x + size] = True
    return mask


def obj(name, mask, score=0.9, track=None):
    ys, xs = np.nonzero(mask)
    record = {
        "class_name": name,
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
        "score": score,
        "segmentation": mask_to_rle(mask),
    }
    if track is not None:
        record["id"] = track
    return record


# Two images: two cats and a dog. The prediction file numbers classes and images differently.
GT_IMAGES = {
    "a.jpg": [obj("cat", square(2, 2, 10)), obj("dog", square(20, 30, 12))],
    "b.jpg": [obj("cat", square(5, 40, 15))],
}


def write_coco(path, images, classes=("cat", "dog")):
    writer = CocoWriter(path, ClassList(classes))
    for name, objects in images.items():
        writer.add_image(name, 60, 40, objects)
    writer.close()
    return path


def run(capsys, *args):
    status = main(["eval", *map(str, args)])
    out, err = capsys.readouterr()
    return status, out, err


def test_coco_against_itself_is_ap_1(tmp_path, capsys):
    gt = write_coco(tmp_path / "gt.json", GT_IMAGES)
    pred = write_coco(tmp_path / "pred.json", dict(reversed(GT_IMAGES.items())), classes=("dog", "cat"))
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt, "--json")
    assert status == 0
    result = json.loads(out)
    for kind in ("box", "mask"):
        assert [result[kind][m] for m in ("AP", "AP50", "AP75")] == pytest.approx([1.0] * 3)
        for name in ("cat", "dog"):
            assert list(result[kind]["classes"][name].values()) == pytest.approx([1.0] * 3)


def test_coco_missing_one_cat_gives_the_hand_computed_ap(tmp_path, capsys):
    gt = write_coco(tmp_path / "gt.json", GT_IMAGES)
    pred = write_coco(tmp_path / "pred.json", {"a.jpg": GT_IMAGES["a.jpg"], "b.jpg": []})
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt, "--json")
    assert status == 0
    result = json.loads(out)
    # cat: 1 of 2 found, no false positive: precision 1 up to recall 0.5, so 51 of COCO's 101 recall points
    # (0, 0.01, ..., 0.50) have precision 1 and the rest 0. dog: 1. COCO's AP is the mean over classes.
    cat = 51 / 101
    for kind in ("box", "mask"):
        assert result[kind]["classes"]["cat"]["AP"] == pytest.approx(cat)
        assert result[kind]["classes"]["dog"]["AP"] == pytest.approx(1.0)
        assert result[kind]["AP"] == pytest.approx((cat + 1) / 2)
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt)  # the table
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "2 images, COCO AP (pycocotools)"
    assert lines[1].split() == ["class", "box", "AP", "box", "AP50", "box", "AP75", "mask", "AP", "mask", "AP50", "mask", "AP75"]
    assert lines[3].split()[:2] == ["all", "0.752"] and lines[4].split()[:2] == ["cat", "0.505"]


def write_tracks(folder, frames, masks=False, name="clip"):
    writer = (MotsWriter(folder / f"{name}.txt", ClassList(["car"])) if masks else MotWriter(folder / f"{name}.txt"))
    for t, objects in enumerate(frames):
        writer.add_frame(t, objects)
    writer.close()
    return folder


def two_cars(ids_of_first=(1, 1, 1, 1)):
    """Two cars over 4 frames, never overlapping; the first car's id on each frame is given."""
    return [
        [obj("car", square(2, 2 + 2 * t, 10), track=ids_of_first[t]), obj("car", square(25, 30, 10), track=2)]
        for t in range(4)
    ]


@needs_trackeval
@pytest.mark.parametrize("masks", [False, True], ids=["mot", "mots"])
def test_tracks_against_themselves_score_1(tmp_path, capsys, masks):
    gt = write_tracks(tmp_path / "gt", two_cars(), masks)
    pred = write_tracks(tmp_path / "pred", [[{**o, "id": o["id"] + 10} for o in f] for f in two_cars()], masks)
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt, "--json")
    assert status == 0
    result = json.loads(out)
    assert result["format"] == ("mots" if masks else "mot")
    assert (result["HOTA"], result["DetA"], result["AssA"], result["MOTA"], result["IDF1"], result["IDSW"]) == (
        1.0, 1.0, 1.0, 1.0, 1.0, 0,
    )  # fmt: skip


@needs_trackeval
@pytest.mark.parametrize("masks", [False, True], ids=["mot", "mots"])
def test_an_id_switch_gives_the_hand_computed_figures(tmp_path, capsys, masks):
    gt = write_tracks(tmp_path / "gt", two_cars(), masks)
    pred = write_tracks(tmp_path / "pred", two_cars(ids_of_first=(1, 1, 99, 99)), masks)
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt, "--json")
    assert status == 0
    result = json.loads(out)
    # 8 ground-truth objects, all found exactly: DetA 1. The first car's id changes once: IDSW 1, MOTA 1 - 1/8.
    # IDF1: best one-to-one id mapping keeps 2 of car 1's frames and car 2's 4: IDTP 6, IDFN 2, IDFP 2 -> 12/16.
    # AssA: car 1's 4 matches each score TPA/(TPA+FNA+FPA) = 2/(2+2+0) = 0.5, car 2's 4 score 1: 0.75.
    # HOTA = sqrt(DetA * AssA).
    assert result["IDSW"] == 1
    assert result["MOTA"] == pytest.approx(1 - 1 / 8)
    assert result["IDF1"] == pytest.approx(0.75)
    assert result["DetA"] == pytest.approx(1.0)
    assert result["AssA"] == pytest.approx(0.75)
    assert result["HOTA"] == pytest.approx(np.sqrt(0.75))
    status, out, _ = run(capsys, "--pred", pred, "--gt", gt)
    assert out.splitlines()[-1].split() == ["all", "0.866", "1.000", "0.750", "0.875", "0.750", "1"]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    gt = write_coco(tmp_path / "gt.json", GT_IMAGES)
    other_image = write_coco(tmp_path / "other.json", {"a.jpg": GT_IMAGES["a.jpg"], "c.jpg": GT_IMAGES["b.jpg"]})
    fewer = write_coco(tmp_path / "fewer.json", {"a.jpg": GT_IMAGES["a.jpg"]})
    bird = write_coco(tmp_path / "bird.json", {"a.jpg": [obj("bird", square(2, 2, 10))], "b.jpg": []}, classes=())
    empty = write_coco(tmp_path / "empty.json", {"a.jpg": [], "b.jpg": []})
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    mot = write_tracks(tmp_path / "mot", two_cars())
    mots = write_tracks(tmp_path / "mots", two_cars(), masks=True)
    other_clip = write_tracks(tmp_path / "other_clip", two_cars(), name="other")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "zero.json").write_bytes(b"")
    (tmp_path / "blank_mot").mkdir()
    (tmp_path / "blank_mot" / "clip.txt").write_bytes(b"")
    cases = [
        (other_image, gt, f"--pred {other_image}: image 'c.jpg' is not in --gt {gt} (images are matched by file_name)"),
        (fewer, gt, f"--pred {fewer}: has no image 'b.jpg', which --gt {gt} has"),
        (bird, gt, f"--pred {bird}: class 'bird' is not a class of --gt {gt} (cat, dog)"),
        (empty, gt, f"--pred {empty}: has no annotations"),
        (tmp_path / "broken.json", gt, f"--pred {tmp_path / 'broken.json'}: cannot be read as JSON"),
        (tmp_path / "list.json", gt, f"--pred {tmp_path / 'list.json'}: not a COCO instances file"),
        (tmp_path / "missing.json", gt, f"--pred {tmp_path / 'missing.json'}: no such file or folder"),
        (mot, gt, f"--pred {mot} and --gt {gt}: give two COCO .json files (images) or two MOT/MOTS folders"),
        (mots, mot, f"--pred {mots} is MOTS (masks) but --gt {mot} is MOT (boxes)"),
        (other_clip, mot, f"--pred {other_clip} / --gt {mot}: predictions have no sequence 'clip'"),
        (tmp_path / "nothing", mot, f"--pred {tmp_path / 'nothing'}: no <sequence>.txt files"),
        (tmp_path / "zero.json", gt, f"--pred {tmp_path / 'zero.json'}: cannot be read as JSON"),
        (mot, tmp_path / "blank_mot", f"--gt {tmp_path / 'blank_mot'}: every file is empty"),
        (tmp_path / "blank_mot", mot, f"--pred {tmp_path / 'blank_mot'}: every file is empty"),
        (mot, tmp_path / "missing", f"--gt {tmp_path / 'missing'}: no such file or folder"),
    ]
    for pred, truth, message in cases:
        status, out, err = run(capsys, "--pred", pred, "--gt", truth)
        assert status == 2, (pred, err)
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: {message}"), err


def official_trackeval(tmp_path, gt_rows: list[str], pred_file, masks: bool) -> dict:
    """trackeval's own pipeline (``Evaluator`` over its ``MotChallenge2DBox`` / ``MOTSChallenge`` datasets,
    which read the files themselves) on a ground truth and one of our writers' files, laid out as it expects."""
    import contextlib
    import io
    import shutil

    import trackeval

    root = tmp_path / "official"
    (root / "gt" / "clip" / "gt").mkdir(parents=True)
    (root / "gt" / "clip" / "gt" / "gt.txt").write_text("".join(row + "\n" for row in gt_rows))
    (root / "gt" / "clip" / "seqinfo.ini").write_text("[Sequence]\nname=clip\nseqLength=4\nimWidth=60\nimHeight=40\n")
    (root / "trackers" / "gsam2" / "data").mkdir(parents=True)
    shutil.copy(pred_file, root / "trackers" / "gsam2" / "data" / "clip.txt")
    dataset_config = {
        "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"), "TRACKERS_TO_EVAL": ["gsam2"],
        "SEQ_INFO": {"clip": 4}, "SKIP_SPLIT_FOL": True, "PRINT_CONFIG": False,
    }  # fmt: skip
    dataset = trackeval.datasets.MOTSChallenge(dataset_config) if masks else trackeval.datasets.MotChallenge2DBox(
        {**dataset_config, "BENCHMARK": "MOT17"}
    )
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "LOG_ON_ERROR": None,
    })  # fmt: skip
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        results, messages = evaluator.evaluate([dataset], metrics)
    assert messages[dataset.get_name()]["gsam2"] == "Success"
    res = results[dataset.get_name()]["gsam2"]["COMBINED_SEQ"]["pedestrian"]
    return {
        "HOTA": float(np.mean(res["HOTA"]["HOTA"])), "DetA": float(np.mean(res["HOTA"]["DetA"])),
        "AssA": float(np.mean(res["HOTA"]["AssA"])), "MOTA": float(res["CLEAR"]["MOTA"]),
        "IDF1": float(res["Identity"]["IDF1"]), "IDSW": int(res["CLEAR"]["IDSW"]),
    }  # fmt: skip


@needs_trackeval
@pytest.mark.parametrize("masks", [False, True], ids=["mot", "mots"])
def test_our_track_files_score_the_same_in_trackevals_own_pipeline(tmp_path, capsys, masks):
    """An independent reader: trackeval's MOT / MOTS Challenge datasets read our writers' files themselves, and
    their official evaluation gives what ``gsam2 eval`` gives on the same files (hand-computed in the test above)."""
    from pycocotools import mask as mask_utils

    truth = two_cars()
    gt_rows = []  # MOT Challenge ground truth (conf 1 = evaluate, class 1 = pedestrian) / MOTS (class 2 = pedestrian)
    for t, objects in enumerate(truth):
        for o in objects:
            if masks:
                rle = mask_utils.encode(np.asfortranarray(rle_mask(o).astype(np.uint8)))
                gt_rows.append(f"{t + 1} {2000 + o['id']} 2 40 60 {rle['counts'].decode()}")
            else:
                x1, y1, x2, y2 = o["bbox"]
                gt_rows.append(f"{t + 1},{o['id']},{x1},{y1},{x2 - x1},{y2 - y1},1,1,1")
    predicted = [[{**o, "class_name": "pedestrian"} for o in frame] for frame in two_cars(ids_of_first=(1, 1, 99, 99))]
    writer = (
        MotsWriter(tmp_path / "pred" / "clip.txt", ClassList(["car", "pedestrian"]))  # pedestrian: MOTS class 2
        if masks
        else MotWriter(tmp_path / "pred" / "clip.txt")
    )
    for t, objects in enumerate(predicted):
        writer.add_frame(t, objects)
    writer.close()

    official = official_trackeval(tmp_path, gt_rows, tmp_path / "pred" / "clip.txt", masks)
    assert official["IDSW"] == 1 and official["IDF1"] == pytest.approx(0.75)  # the hand-computed figures
    assert official["HOTA"] == pytest.approx(np.sqrt(0.75))
    status, out, _ = run(capsys, "--pred", tmp_path / "pred", "--gt", tmp_path / "official" / "gt", "--json")
    assert status == 0
    ours = json.loads(out)
    assert {k: ours[k] for k in official} == pytest.approx(official)


def rle_mask(o):
    from gsam2.core import rle_to_mask

    return rle_to_mask(o["segmentation"])


def test_tracks_without_trackeval_name_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    mot = write_tracks(tmp_path / "mot", two_cars())
    monkeypatch.setitem(sys.modules, "trackeval", None)  # as if not installed: importing it raises ImportError
    status, out, err = run(capsys, "--pred", mot, "--gt", mot)
    assert status == 2 and out == ""
    assert err == 'error: gsam2 eval on tracks needs trackeval: pip install "gsam2[eval]"\n'
