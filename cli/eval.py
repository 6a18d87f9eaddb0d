"""``gsam2 eval --pred PRED --gt GT``: how good labels are, against ground truth.

Two COCO files (``.json``): box and mask AP per class and overall
(:mod:`~..core.coco_eval`, pycocotools). Two MOT or MOTS folders (or ``.txt``
files): HOTA, DetA, AssA, MOTA, IDF1 and ID switches per sequence and overall
(:mod:`~..core.track_metrics`, trackeval). A table, or ``--json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core import GroundedSam2Error, InputError
from .console import EXIT_OK, report, usage_error

TRACK_COLUMNS = ("HOTA", "DetA", "AssA", "MOTA", "IDF1", "IDSW")


def add_eval_command(subcommands) -> None:
    command = subcommands.add_parser(
        "eval",
        help="score labels against ground truth: COCO box/mask AP, or HOTA/MOTA/IDF1 for MOT/MOTS tracks",
        description=(
            "Images: --pred and --gt are COCO instances files (gsam2 image --format coco writes one); box and mask "
            "AP (pycocotools) per class and overall; images are matched by file_name, classes by name. Videos: "
            "--pred and --gt are MOT or MOTS folders of <sequence>.txt (gsam2 video --format mot|mots writes them; "
            "MOT Challenge's <sequence>/gt/gt.txt also works) or single .txt files; HOTA, DetA, AssA, MOTA, IDF1 "
            "and ID switches (trackeval) per sequence and overall. Exits with 2 on unusable input."
        ),
    )
    command.add_argument("--pred", required=True, metavar="PRED", help="the labels to score (file or folder)")
    command.add_argument("--gt", required=True, metavar="GT", help="the ground truth (file or folder)")
    command.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    command.set_defaults(run=run_eval)


def track_kind(path: Path, option: str) -> str:
    """``"boxes"`` (MOT: comma-separated) or ``"masks"`` (MOTS: space-separated, an RLE last) from the first row."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(path.glob("*/gt/gt.txt")) or sorted(path.glob("*.txt"))
    else:
        raise InputError(f"{option} {path}: no such file or folder")
    for file in files:
        try:
            with open(file, encoding="utf-8") as lines:
                row = next((line.strip() for line in lines if line.strip()), None)
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{option} {file}: cannot be read ({error})") from None
        if row is None:
            continue
        if "," in row:
            return "boxes"
        if len(row.split()) == 6:
            return "masks"
        raise InputError(f"{option} {file}: neither MOT (frame,id,x,y,w,h,...) nor MOTS (frame id class h w rle) rows")
    if not files:
        raise InputError(f"{option} {path}: no <sequence>.txt files and no <sequence>/gt/gt.txt in this folder")
    raise InputError(f"{option} {path}: every file is empty")


def evaluate_track_folders(pred: Path, gt: Path) -> dict[str, Any]:
    try:
        from ..core.track_metrics import evaluate_tracks, read_mot, read_mots
        import trackeval  # noqa: F401
    except ImportError:
        raise InputError('gsam2 eval on tracks needs trackeval: pip install "gsam2[eval]"') from None
    kind, pred_kind = track_kind(gt, "--gt"), track_kind(pred, "--pred")
    if kind != pred_kind:
        names = {"boxes": "MOT (boxes)", "masks": "MOTS (masks)"}
        raise InputError(f"--pred {pred} is {names[pred_kind]} but --gt {gt} is {names[kind]}")
    read = read_mot if kind == "boxes" else read_mots
    truth = read(gt, ground_truth=True)
    predicted = read(pred)
    if not any(objects for frames in truth.values() for objects in frames):
        raise InputError(f"--gt {gt}: has no objects")
    try:
        result = evaluate_tracks(truth, predicted, kind=kind)
    except InputError as error:  # names the side ("predictions have no sequence ..."): add the paths
        raise InputError(f"--pred {pred} / --gt {gt}: {error}") from None
    return {"kind": "tracks", "format": "mot" if kind == "boxes" else "mots", **result}


def run_eval(args: argparse.Namespace) -> int:
    from ..core.coco_eval import evaluate_coco

    pred, gt = Path(args.pred), Path(args.gt)
    try:
        for option, path in (("--pred", pred), ("--gt", gt)):
            if not path.exists():
                raise InputError(f"{option} {path}: no such file or folder")
        is_coco = [p.is_file() and p.suffix.lower() == ".json" for p in (pred, gt)]
        if any(is_coco) and not all(is_coco):
            raise InputError(
                f"--pred {pred} and --gt {gt}: give two COCO .json files (images) or two MOT/MOTS folders (videos)"
            )
        if all(is_coco):
            result = {"kind": "coco", **evaluate_coco(gt, pred)}
        else:
            result = evaluate_track_folders(pred, gt)
    except GroundedSam2Error as error:
        return usage_error(error)
    if args.json:
        print(json.dumps(result))
    else:
        report(coco_table(result) if result["kind"] == "coco" else track_table(result))
    return EXIT_OK


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def coco_table(result: dict[str, Any]) -> str:
    kinds = [k for k in ("box", "mask") if result[k] is not None]
    header = ["class"] + [f"{k} {m}" for k in kinds for m in ("AP", "AP50", "AP75")]
    rows = [["all"] + [_cell(result[k][m]) for k in kinds for m in ("AP", "AP50", "AP75")]]
    for name in result["classes"]:
        rows.append([name] + [_cell(result[k]["classes"][name][m]) for k in kinds for m in ("AP", "AP50", "AP75")])
    note = "" if result["mask"] is not None else "\n(no mask AP: a file has annotations without segmentation)"
    return f"{_count(result['images'], 'image')}, COCO AP (pycocotools)\n" + _table(header, rows) + note


def track_table(result: dict[str, Any]) -> str:
    header = ["sequence", *TRACK_COLUMNS]
    rows = [[name] + [_cell(scores[c]) for c in TRACK_COLUMNS] for name, scores in result["sequences"].items()]
    rows.append(["all"] + [_cell(result[c]) for c in TRACK_COLUMNS])
    what = "boxes (MOT)" if result["format"] == "mot" else "masks (MOTS)"
    return f"{_count(len(result['sequences']), 'sequence')}, {what}, trackeval\n" + _table(header, rows)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
