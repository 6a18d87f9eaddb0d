"""Tracking metrics (core/track_metrics.py) against hand-computed figures, and the identity benchmark in small.

The figures below are worked out by hand from the metrics' definitions (HOTA:
Luiten et al. 2021; CLEAR MOT: Bernardin & Stiefelhagen 2008; IDF1: Ristani
et al. 2016), then computed by trackeval through ``evaluate_tracks``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

pytest.importorskip("trackeval")

from gsam2.core.errors import InputError  # noqa: E402
from gsam2.core.track_metrics import TrackedObject, evaluate_tracks, objects_from_masks, read_mot, read_mots  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "bench" / "track_identity.py"


def _bench():
    """bench/track_identity.py as a module (bench/ is scripts, not a package)."""
    if "track_identity" not in sys.modules:
        spec = importlib.util.spec_from_file_location("track_identity", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["track_identity"] = module  # its dataclasses look their module up while being made
        spec.loader.exec_module(module)
    return sys.modules["track_identity"]


def two_walkers(frames: int = 10, swap_at: int | None = None, drop: set[int] = frozenset()):
    """Ground truth of two boxes walking apart, and a prediction with other id numbers.

    ``swap_at``: from that frame on the prediction's ids are swapped; ``drop``: frames where the
    prediction misses the first walker.
    """
    gt, pred = [], []
    for t in range(frames):
        a, b = (10 + 2 * t, 10, 20, 20), (100 - 2 * t, 60, 20, 20)
        gt.append([TrackedObject(1, box=a), TrackedObject(2, box=b)])
        ida, idb = (7, 8) if swap_at is None or t < swap_at else (8, 7)
        here = [] if t in drop else [TrackedObject(ida, box=a)]
        pred.append(here + [TrackedObject(idb, box=b)])
    return {"walk": gt}, {"walk": pred}


def test_a_perfect_prediction_scores_one_whatever_its_id_numbers():
    gt, pred = two_walkers()
    scores = evaluate_tracks(gt, pred)
    for name in ("HOTA", "DetA", "AssA", "LocA", "MOTA", "IDF1"):
        assert scores[name] == pytest.approx(1.0), name
    assert scores["IDSW"] == 0
    assert scores["gt_objects"] == scores["pred_objects"] == 20


def test_one_id_swap_halfway():
    # Two objects, 10 frames, ids swapped from frame 6 on (t = 5).
    # CLEAR: both ground-truth objects change prediction id once -> IDSW = 2; MOTA = 1 - 2/20 = 0.9.
    # IDF1: the best one-to-one id pairing covers 5 of each object's 10 frames -> IDTP = 10,
    #   IDFN = IDFP = 10 -> IDF1 = 10 / (10 + 5 + 5) = 0.5.
    # HOTA: every detection matches (DetA = 1); each true positive's pair (gt id, pred id) shares
    #   5 frames of 10 + 10 - 5 = 15 -> AssA = 1/3, HOTA = sqrt(1 * 1/3).
    gt, pred = two_walkers(swap_at=5)
    scores = evaluate_tracks(gt, pred)
    assert scores["IDSW"] == 2
    assert scores["MOTA"] == pytest.approx(0.9)
    assert (scores["IDTP"], scores["IDFN"], scores["IDFP"]) == (10, 10, 10)
    assert scores["IDF1"] == pytest.approx(0.5)
    assert scores["DetA"] == pytest.approx(1.0)
    assert scores["AssA"] == pytest.approx(1 / 3)
    assert scores["HOTA"] == pytest.approx(math.sqrt(1 / 3))


def test_two_missed_frames():
    # The first object missed on 2 of 10 frames: 18 of 20 found, no false positive.
    # MOTA = 1 - 2/20 = 0.9; IDF1 = 18 / (18 + 0 + 1) ; DetA = 18/20;
    # AssA = (8 * 8/(10 + 8 - 8) + 10 * 1) / 18; HOTA = sqrt(DetA * AssA).
    gt, pred = two_walkers(drop={3, 4})
    scores = evaluate_tracks(gt, pred)
    assert scores["IDSW"] == 0
    assert scores["MOTA"] == pytest.approx(0.9)
    assert scores["IDF1"] == pytest.approx(18 / 19)
    assert scores["DetA"] == pytest.approx(0.9)
    ass_a = (8 * 0.8 + 10 * 1.0) / 18
    assert scores["AssA"] == pytest.approx(ass_a)
    assert scores["HOTA"] == pytest.approx(math.sqrt(0.9 * ass_a))


def test_masks_by_class_and_per_sequence():
    masks = np.zeros((2, 30, 40), bool)
    masks[0, 2:10, 2:12] = True
    masks[1, 15:28, 20:35] = True
    frames = [objects_from_masks(masks, [1, 2], class_ids=[0, 1]) for _ in range(4)]
    assert frames[0][0].box == (2.0, 2.0, 10.0, 8.0)
    scores = evaluate_tracks({"a": frames, "b": frames}, {"a": frames, "b": frames}, kind="masks", by_class=True)
    assert scores["HOTA"] == pytest.approx(1.0) and set(scores["classes"]) == {0, 1}
    assert set(scores["sequences"]) == {"a", "b"}
    # The right masks with the wrong labels: nothing matches within a class.
    relabelled = [objects_from_masks(masks, [1, 2], class_ids=[1, 0]) for _ in range(4)]
    wrong = evaluate_tracks({"a": frames}, {"a": relabelled}, kind="masks", by_class=True)
    assert wrong["HOTA"] == 0.0 and wrong["IDTP"] == 0
    assert evaluate_tracks({"a": frames}, {"a": relabelled}, kind="masks")["HOTA"] == pytest.approx(1.0)


def test_mot_and_mots_files_read_back_to_the_same_scores(tmp_path):
    gt, pred = two_walkers(swap_at=5)
    for name, tracks in (("gt", gt), ("pred", pred)):
        folder = tmp_path / name
        folder.mkdir()
        with open(folder / "walk.txt", "w") as f:
            for t, objects in enumerate(tracks["walk"]):
                for o in objects:
                    f.write(f"{t + 1},{o.track_id},{','.join(str(v) for v in o.box)},1,-1,-1,-1\n")
    from_files = evaluate_tracks(read_mot(tmp_path / "gt", ground_truth=True), read_mot(tmp_path / "pred"))
    assert from_files["IDSW"] == 2 and from_files["IDF1"] == pytest.approx(0.5)

    # MOTS: frame id class height width rle, space separated.
    mask = np.zeros((20, 30), np.uint8)
    mask[3:8, 4:12] = 1
    counts = mask_utils.encode(np.asfortranarray(mask))["counts"].decode()
    (tmp_path / "s.txt").write_text(f"1 5 2 20 30 {counts}\n2 5 2 20 30 {counts}\n3 6 10 20 30 {counts}\n")
    read = read_mots(tmp_path / "s.txt", ground_truth=True)
    assert [len(frame) for frame in read["s"]] == [1, 1, 0], "class 10 is an ignore region in MOTS ground truth"
    assert read["s"][0][0].box == (4.0, 3.0, 8.0, 5.0) and read["s"][0][0].class_id == 2
    assert evaluate_tracks(read, read, kind="masks")["HOTA"] == pytest.approx(1.0)


def test_mot_challenge_layout_and_zero_marked_rows(tmp_path):
    sequence = tmp_path / "MOT-01"
    (sequence / "gt").mkdir(parents=True)
    (sequence / "gt" / "gt.txt").write_text("1,1,0,0,10,10,1,1,1\n2,1,1,0,10,10,1,1,1\n2,2,50,50,5,5,0,1,1\n")
    (sequence / "seqinfo.ini").write_text("[Sequence]\nname=MOT-01\nseqLength=5\n")
    read = read_mot(tmp_path, ground_truth=True)
    assert list(read) == ["MOT-01"]
    assert [len(frame) for frame in read["MOT-01"]] == [1, 1, 0, 0, 0], "seqLength frames; conf 0 not evaluated"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("1,2,3\n", "has 3 columns"),
        ("0,1,0,0,5,5,1\n", "frames are numbered from 1"),
        ("1,1.5,0,0,5,5,1\n", "not a whole number"),
    ],
)
def test_bad_mot_files_are_one_line_errors(tmp_path, content, problem):
    (tmp_path / "bad.txt").write_text(content)
    with pytest.raises(InputError, match=problem) as error:
        read_mot(tmp_path / "bad.txt")
    assert "bad.txt" in str(error.value) and "\n" not in str(error.value)


def test_bad_inputs_to_evaluate_are_one_line_errors(tmp_path):
    gt, pred = two_walkers()
    with pytest.raises(InputError, match="no sequence 'walk'"):
        evaluate_tracks(gt, {"other": pred["walk"]})
    with pytest.raises(InputError, match="kind 'points'"):
        evaluate_tracks(gt, pred, kind="points")
    with pytest.raises(InputError, match="no mask"):
        evaluate_tracks(gt, pred, kind="masks")
    doubled = {"walk": [frame + frame[:1] for frame in pred["walk"]]}
    with pytest.raises(InputError, match="frame 1: track id 7 appears twice"):
        evaluate_tracks(gt, doubled)
    with pytest.raises(InputError, match="no such file or folder"):
        read_mot(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no <sequence>.txt files"):
        read_mots(tmp_path / "empty")


# ------------------------------------------------------------------------------------------ the benchmark


def test_stand_ins_without_faults_give_the_ground_truth_back():
    bench = _bench()
    row = bench.run_one("crossing", "none", 10, "ours")
    assert (row["hota"], row["idf1"], row["id_switches"]) == (1.0, 1.0, 0)


def test_occlusion_scene_ours_keeps_more_ids_than_the_reference():
    """One small scene through both rules: the pillar hides objects for 8 to 44 frames."""
    bench = _bench()
    truth = bench.SCENES["occlusion"].render()
    ours = bench.run_one("occlusion", "none", 5, "ours", truth=truth)
    reference = bench.run_one("occlusion", "none", 5, "reference", truth=truth)
    assert ours["id_switches"] < reference["id_switches"]
    assert ours["hota"] > reference["hota"] and ours["idf1"] > reference["idf1"]
    # Without re-identification our rule ends the hidden objects' tracks too (gone longer than 2 x step).
    plain = bench.run_one("occlusion", "none", 5, "ours", truth=truth, reidentify_within=0)
    assert plain["id_switches"] > ours["id_switches"]


def test_reference_port_follows_the_reference_rule():
    """Restarted at every keyframe with the detections only: an object the detector misses on a keyframe
    is dropped for that segment and comes back under a new id; ours keeps tracking it."""
    bench = _bench()
    truth = bench.SCENES["crossing"].render()

    class MissOnce(bench.StandInDetector):
        def _detect_one(self, t, phrases):
            found = super()._detect_one(t, phrases)
            return found[1:] if t == 10 else found  # the first object is missed on keyframe 10

    frames = bench.scene_frames(truth)
    faults = bench.FAULT_LEVELS["none"]
    runs = {}
    for rule in ("ours", "reference"):
        detector = MissOnce(truth, faults, 0)
        runs[rule] = bench.RULES[rule](frames, detector, bench.StandInSegmenter(truth),
                                       bench.StandInVideoTracker(truth, faults, 0), 10, 0.8)
    assert 1 not in runs["reference"][15].ids and 6 in runs["reference"][25].ids
    assert all(1 in frame.ids for frame in runs["ours"])


def test_json_output_is_one_object_on_the_last_line(capsys):
    bench = _bench()
    assert bench.main(["--scenes", "reentry", "--levels", "none", "--steps", "20", "--seeds", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["rule"] for r in rows] == ["ours", "reference"]
    for row in rows:
        assert {"scene", "fault_level", "step", "rule", "hota", "idf1", "id_switches"} <= set(row)
        assert row["scene"] == "reentry" and row["fault_level"] == "none" and row["step"] == 20
