"""Which files a run reads and which names it writes: checked before any model loads."""

from __future__ import annotations

import argparse
import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core import InputError
from ..core.images import IMAGE_EXTENSIONS, special_file_kind
from ..core.outputs import check_no_overwrite, check_not_foreign, check_output_folder, inside, output_names

#: What a folder or pattern given to ``gsam2 video`` yields (an explicit file is tried whatever its extension).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"})


def expand_inputs(
    inputs: Sequence[str],
    recursive: bool = False,
    skip_folder: Path | None = None,
    extensions: frozenset[str] | set[str] = IMAGE_EXTENSIONS,
    kind: str = "image",
) -> tuple[list[Path], list[str]]:
    """Turn files, folders and globs into a sorted, de-duplicated list of image files (or ``kind`` files).

    Files found in ``skip_folder`` (the run's output folder, when it lies inside an
    input folder) are left out, so a run never reads what an earlier run wrote.
    Returns the files and one error line for every input that matched nothing, and
    for every FIFO, device or socket a folder or pattern holds (opening one could
    block the run forever). A file reached twice (through a symlinked folder, say)
    is one input.

    Raises:
        InputError: an input named explicitly is a FIFO, a device or a socket.
    """
    files: list[Path] = []
    errors: list[str] = []

    article = "an" if kind[0] in "aeiou" else "a"

    def keep(found: Path) -> bool:
        if skip_folder is not None and inside(found, skip_folder):
            return False
        special = special_file_kind(found)
        if special is not None:
            errors.append(f"{found}: is {special}, not {article} {kind} file; skipped")
        return found.is_file()

    for raw in inputs:
        path = Path(raw)
        if not raw.strip():
            errors.append("--input '': an empty path names no file")
        elif path.is_dir():
            entries = folder_entries(path, recursive)
            found = sorted(p for p in entries if p.suffix.lower() in extensions and keep(p))
            if not found:
                errors.append(f"{raw}: folder holds no {kind} files ({', '.join(sorted(extensions))})")
            files.extend(found)
        elif path.exists():
            special = special_file_kind(path)
            if special is not None:  # refused before anything opens it: reading it could block forever
                raise InputError(f"--input {raw}: is {special}, not {article} {kind} file")
            files.append(path)  # an explicit file is tried whatever its extension
        elif glob.has_magic(raw):
            found = sorted(Path(p) for p in glob.glob(raw, recursive=recursive) if keep(Path(p)))
            if not found:
                errors.append(f"{raw}: pattern matched no files")
            files.extend(found)
        else:
            errors.append(f"{raw}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, errors


def folder_entries(folder: Path, recursive: bool) -> list[Path]:
    """The entries of ``folder`` that are not folders; with ``recursive``, those of every sub-folder too.

    Symlinked sub-folders (``rec/linked -> ../other``) are followed, which
    ``Path.glob("**")`` does not do; each real folder is listed once, so a link
    back up the tree ends there instead of looping.
    """
    if not recursive:
        return [entry for entry in folder.iterdir() if not entry.is_dir()]
    entries: list[Path] = []
    listed: set[tuple[int, int]] = set()
    for root, subfolders, names in os.walk(folder, followlinks=True):
        status = os.stat(root)
        if (status.st_dev, status.st_ino) in listed:
            subfolders.clear()  # listed already: os.walk itself would follow a loop until paths grow too long
            continue
        listed.add((status.st_dev, status.st_ino))
        entries.extend(Path(root) / name for name in names)
    return entries


@dataclass
class ImageRunPlan:
    """What a ``gsam2 image`` / ``autolabel`` run reads and writes, checked before any model loads."""

    files: list[Path]
    names: list[str]
    output: Path
    input_errors: list[str]
    already_done: int = 0  # --resume: inputs left out because their results are complete


def plan_image_run(args: argparse.Namespace) -> ImageRunPlan:
    """Inputs, output folder and output names; raises ``InputError`` (a usage error) before any work."""
    output = check_output_folder(args.output, "--output")
    # The output folder inside an input folder: what earlier runs wrote there is not input.
    nested = any(
        Path(raw).is_dir() and inside(output, Path(raw)) and not inside(Path(raw), output)
        for raw in args.input
        if raw.strip()
    )
    files, errors = expand_inputs(args.input, recursive=args.recursive, skip_folder=output if nested else None)
    names = output_names(files)
    written = [output / f"{name}.json" for name in names]
    if not args.no_draw:
        written += [output / f"{name}.jpg" for name in names]
    check_no_overwrite(written, files, "--output")
    if getattr(args, "resume", False):  # a record of ours cut short is redone, not refused as foreign
        from .resume import half_written_record

        written = [path for path in written if not (path.suffix == ".json" and half_written_record(path))]
    check_not_foreign(written, setting="--output")  # e.g. a user's a.json (a LabelMe sidecar) next to a.png: never replaced
    plan = ImageRunPlan(files, names, output, errors)
    if getattr(args, "resume", False):
        plan = without_complete(plan, draw=not args.no_draw, caption=hasattr(args, "caption"))
    return plan


def without_complete(plan: ImageRunPlan, draw: bool, caption: bool) -> ImageRunPlan:
    """``plan`` less the inputs whose results in the output folder are complete (``--resume``)."""
    from .resume import image_result_complete

    kept = [
        (path, name)
        for path, name in zip(plan.files, plan.names)
        if not image_result_complete(plan.output, name, path, draw, caption)
    ]
    done = len(plan.files) - len(kept)
    return ImageRunPlan([p for p, _ in kept], [n for _, n in kept], plan.output, plan.input_errors, done)
