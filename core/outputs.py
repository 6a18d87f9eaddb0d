"""Writing results next to users' data without ever destroying it.

- :func:`check_output_folder` checks the output folder before any model loads
  (a file in the way, a parent that is a file, no write permission);
- :func:`output_names` gives every input a unique, stable output name;
- :func:`check_no_overwrite` refuses outputs that would replace an input;
- :func:`check_not_foreign` refuses outputs that would replace a file gsam2 did
  not write (:func:`written_by_gsam2` knows ours by their content);
- :func:`atomic_write_bytes` / :func:`atomic_save` write to a temporary name in the
  same folder and rename, so a full disk or a kill never leaves a truncated file
  under the final name; a failed write is an :class:`~.errors.OutputError` naming
  the file, a full disk a :class:`~.errors.DiskFullError`.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .errors import DiskFullError, InputError, OutputError

# Written into our drawings (JPEG comment) and videos (MP4 "comment" tag), so that a later run knows them as ours.
GSAM2_MARK = "written by gsam2 (Grounded SAM 2)"
# Errors after which every later write fails too: the run stops instead of failing each remaining image.
DISK_FULL_ERRNOS = frozenset(code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None)


# How the messages below name the output folder unless the caller gives its own spelling
# (the CLI passes "--output"; core must not name one adapter's flag to another's users).
OUTPUT_FOLDER = "output folder"


def check_output_folder(path: str | Path, setting: str = OUTPUT_FOLDER) -> Path:
    """Raise ``InputError`` with one line unless ``path`` is, or can become, a writable folder. Creates nothing.

    ``setting`` is how the message names the folder (``"--output"`` for the CLI).
    """
    folder = Path(path)
    if str(path).strip() == "":
        raise InputError(f"{setting} is empty: give a folder to write results into")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{setting} {path}: is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{setting} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{setting} {path}: no permission to write in {existing}")
    return folder


def prepare_output_folder(path: str | Path, setting: str = OUTPUT_FOLDER) -> Path:
    """:func:`check_output_folder`, then create the folder."""
    folder = check_output_folder(path, setting)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{setting} {path}: cannot create it ({error.strerror or error})") from None
    return folder


def output_names(files: Sequence[Path]) -> list[str]:
    """One output name per input file, unique within the run and the same on every run.

    The name is the file's stem (``photo.jpg`` -> ``photo``); when several
    inputs share a stem, each keeps its extension (``a.jpg``, ``a.png``); when
    inputs from different folders still share a name, the later ones get
    ``-2``, ``-3``, ... in input order, skipping any name another input has.
    """
    stems = [path.stem for path in files]
    shared = {stem.lower() for stem in stems if sum(s.lower() == stem.lower() for s in stems) > 1}
    wanted = [path.name if path.stem.lower() in shared else path.stem for path in files]
    taken = {name.lower() for name in wanted}
    names, used = [], set()
    for name in wanted:
        candidate, count = name, 1
        while candidate.lower() in used or (count > 1 and candidate.lower() in taken):
            count += 1
            candidate = f"{name}-{count}"
        used.add(candidate.lower())
        names.append(candidate)
    return names


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_no_overwrite(outputs: Iterable[Path], inputs: Iterable[Path], setting: str = OUTPUT_FOLDER) -> None:
    """Raise ``InputError`` if any output path is one of the input files."""
    sources = {Path(p).resolve() for p in inputs}
    for output in outputs:
        if Path(output).resolve() in sources:
            raise InputError(f"{setting} would overwrite the input {output}: choose another output folder")


def written_by_gsam2(path: Path) -> bool:
    """Whether ``path`` is a regular file one of our commands wrote, judged by its content.

    Ours: an image record (``{"image_path": ...`` as :func:`json.dumps` with
    ``indent=2`` writes it, with the record's keys), a drawing or video carrying
    :data:`GSAM2_MARK`, a JSON-lines file of frame records (or an empty one: a
    video run stopped before its first frame). Anything else, a link included, is not.
    """
    path = Path(path)
    try:
        if not stat.S_ISREG(path.lstat().st_mode):  # a link, a FIFO (reading it would block), a device
            return False
        suffix = path.suffix.lower()
        if suffix == ".json":
            with open(path, "rb") as file:
                if file.read(18) != b'{\n  "image_path": ':
                    return False
                file.seek(0)
                record = json.load(file)
            keys = {"image_path", "annotations", "box_format", "img_width", "img_height"}
            return isinstance(record, dict) and keys <= record.keys() and record["box_format"] == "xyxy"
        if suffix == ".jsonl":
            with open(path, "rb") as file:
                first = file.readline()
            record = json.loads(first) if first else {"frame_index": 0, "objects": []}
            return isinstance(record, dict) and {"frame_index", "objects"} <= record.keys()
        if suffix == ".jpg":
            from PIL import Image

            with Image.open(path) as image:  # reads the header only
                return image.format == "JPEG" and image.info.get("comment") == GSAM2_MARK.encode()
        if suffix == ".mp4":
            import av

            with av.open(str(path)) as container:
                return container.metadata.get("comment") == GSAM2_MARK
    except Exception:  # noqa: BLE001 - unreadable, not JSON, not an image or video: not ours
        return False
    return False


def check_not_foreign(outputs: Iterable[Path], folders_refused: bool = False, setting: str = OUTPUT_FOLDER) -> None:
    """Raise ``InputError`` naming the first output path that holds something gsam2 did not write.

    A folder in an output's place cannot be replaced (the rename fails, and that
    output's write is reported); ``folders_refused`` refuses it here instead.
    """
    for output in outputs:
        output = Path(output)
        if not os.path.lexists(output):
            continue
        if output.is_dir() and not output.is_symlink():
            if folders_refused:
                raise InputError(f"{setting}: {output} is a folder: move it away, or choose another output folder")
            continue
        if not written_by_gsam2(output):
            raise InputError(
                f"{setting} would replace {output}, which gsam2 did not write: move it away, or choose another "
                "output folder"
            )


def temporary_path(path: Path) -> Path:
    """A new, empty file next to ``path`` (same folder, same extension) to write and later rename onto it."""
    return _create_temporary(Path(path))


def _create_temporary(path: Path) -> Path:
    """Create an empty, new file next to ``path`` with a name no other writer uses, and return its path.

    Created with mode 0o666 less the umask, as ``open()`` creates files: ``tempfile.mkstemp``
    makes them 0o600, and the rename would then leave outputs nobody else can read.
    """
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{path.suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return temporary
        except FileExistsError:  # another writer's (1 in 4 billion): draw another name
            continue


def atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(temporary_path)``, then rename the result to ``path`` (same folder, so same file system).

    Raises:
        DiskFullError: no space or quota left (the temporary file is removed).
        OutputError: naming ``path``, for any other failure to write it (e.g. a folder in its place).
    """
    path = Path(path)
    temporary = None
    try:
        temporary = _create_temporary(path)
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            if error.errno in DISK_FULL_ERRNOS:
                raise DiskFullError(error.errno, reason, str(path)) from error
            raise OutputError(f"{path}: cannot write it ({reason})") from error
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_save(path, lambda temporary: temporary.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
