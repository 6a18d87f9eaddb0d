"""What a run writes to the dataset: the label field, its error field, companion fields and mask files.

Before anything is written, :func:`check_outputs` refuses a run that would
overwrite a field or file that is not its own (fields gsam2 creates carry
:func:`field_info`). Then each batch is one bulk write per field
(:func:`write_all`): labels (replaced or merged, see ``WRITE_MODES``), why
samples failed (:func:`write_errors`), extra fields such as captions; masks go
inside the labels or to PNG files under a folder (``MASK_STORAGE``, :func:`mask_paths_for`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fiftyone as fo

from ..core import InputError
from .labels import merge_detections

#: The ``write_mode`` choices: how a run writes a label field that already has labels (see :func:`write_batch`).
WRITE_MODES = ("overwrite", "merge")
#: The ``mask_storage`` choices: masks inside each label, or PNG files under ``mask_dir`` (:func:`mask_paths_for`).
MASK_STORAGE = ("database", "files")


def error_field_name(label_field: str) -> str:
    """The sample field where a run records why a sample failed (``None`` when it succeeded)."""
    return f"{label_field}_error"


def error_field_description(label_field: str) -> str:
    """The error field's description, as every version since fc125eb wrote it (see :func:`created_by_us`)."""
    return f"Why {label_field!r} failed"


def field_info(role: str, label_field: str) -> dict[str, str]:
    """The ``info`` gsam2 stores on a field it creates beside a label field (``role``: errors, captions).

    FiftyOne keeps a field's ``info`` dict in the dataset's schema
    (``add_sample_field(..., info=)``, ``Field.info`` in fiftyone/core/fields.py),
    so a later run can tell its own field from a user's field of the same name.
    """
    return {"created_by": "gsam2", "role": role, "label_field": label_field}


def created_by_us(field, role: str, label_field: str) -> bool:
    """Whether ``field`` is the ``role`` field gsam2 created for ``label_field`` (so a run may clear it).

    Error fields created before fields were marked carry only their description.
    """
    if field_info(role, label_field).items() <= (field.info or {}).items():
        return True
    return role == "errors" and field.description == error_field_description(label_field)


# ------------------------------------------- checks before writing


def check_outputs(dataset: fo.Dataset, settings: dict[str, Any], companions: dict[str, str] | None = None) -> None:
    """Refuse, before anything is written, a run that would overwrite a field or file that is not its own.

    ``companions`` are the text fields the run writes beside the label field,
    as ``{name: role}`` (the error field is always one). The mask folder is
    created and tried (:func:`check_mask_dir`).
    """
    label_field = settings["label_field"]
    field = dataset.get_field_schema().get(label_field)
    if field is not None and getattr(field, "document_type", None) is not fo.Detections:
        raise InputError(
            f"label field {label_field!r} already exists and does not hold Detections; choose another name"
        )
    check_error_field(dataset, label_field)
    for name, role in (companions or {}).items():
        check_companion_field(dataset, name, role, label_field)
    if settings["mask_dir"] is not None:
        check_mask_dir(settings["mask_dir"], label_field)


def ensure_fields(dataset: fo.Dataset, label_field: str) -> None:
    """Create the label field; the error field is created by the first failure (:func:`write_errors`).

    Call after :func:`check_outputs`: a run where nothing failed adds nothing to the App's sidebar.
    """
    if label_field not in dataset.get_field_schema():
        dataset.add_sample_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)


def check_error_field(dataset: fo.Dataset, label_field: str) -> None:
    """Refuse a run whose error field exists and is not the one gsam2 created for ``label_field``."""
    check_companion_field(dataset, error_field_name(label_field), "errors", label_field)


def check_companion_field(dataset: fo.Dataset, name: str, role: str, label_field: str) -> None:
    """Refuse a run that would write ``role`` (errors, captions) into a field ``name`` gsam2 did not create.

    A run sets these fields for every sample it processes (``None`` for a
    success in the error field), so a user's own field of that name (their
    notes in ``review_error``) would be lost: only a field marked by
    :func:`field_info` for this label field is written (:func:`created_by_us`).
    """
    field = dataset.get_field_schema().get(name)
    if field is None:
        return
    if not isinstance(field, fo.StringField):
        raise InputError(
            f"field {name!r} already exists and does not hold text; "
            f"it is where {role} of {label_field!r} are recorded: choose another label field"
        )
    if not created_by_us(field, role, label_field):
        raise InputError(
            f"field {name!r} already exists and gsam2 did not create it; "
            f"it is where {role} of {label_field!r} are recorded: choose another label field"
        )


def check_mask_dir(mask_dir: Path, label_field: str) -> None:
    """Create the label field's mask folder and write a file in it, or refuse the run in one line.

    A file in the way, a read-only file system or a missing permission would
    otherwise be an ``OSError`` at the first sample. Only a real write tells:
    ``os.access`` answers yes to root on a read-only mount such as ``/sys``.
    """
    folder = mask_folder(mask_dir, label_field)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f"mask folder {str(mask_dir)!r}: cannot write {str(folder)!r}: {reason}") from None


def mask_folder(mask_dir: Path, label_field: str, sample_id: str = "") -> Path:
    """The folder of a label field's (or one of its samples') mask PNGs, refused unless it lies under ``mask_dir``."""
    folder = (mask_dir / label_field / sample_id).resolve()
    if not folder.is_relative_to(mask_dir.resolve()):
        raise InputError(f"label field {label_field!r}: its mask files would be written outside {str(mask_dir)!r}")
    return folder


# --------------------------------------------------------- writing


def write_all(view, label_field, labels, errors, sample_fields, write_mode: str, source: str) -> None:
    """One bulk write per field: the labels, the error records, and extra sample fields (captions)."""
    write_batch(view, label_field, labels, errors, write_mode, source)
    for name, values in sample_fields.items():
        view.set_values(name, values, key_field="id")


def write_batch(
    view,
    label_field: str,
    labels: dict[str, fo.Detections],
    errors: dict[str, str | None],
    write_mode: str,
    source: str,
) -> None:
    """One bulk write of a batch's labels and error records, keyed by sample id."""
    if labels:
        if write_mode == "merge":
            batch = view.select(list(labels))
            existing = dict(zip(*batch.values(["id", label_field])))
            labels = {
                sample_id: merge_detections(existing.get(sample_id), new, source) for sample_id, new in labels.items()
            }
        view.set_values(label_field, labels, key_field="id")
    write_errors(view, label_field, errors)


def write_errors(view, label_field: str, errors: dict[str, str | None]) -> None:
    """Record failures (text) and clear earlier failures of samples that now succeeded (``None``).

    The error field is created by the first failure; while it does not exist
    there is nothing to clear, so successes write nothing.
    """
    error_field = error_field_name(label_field)
    dataset = view._root_dataset
    exists = error_field in dataset.get_field_schema()
    if not exists:
        errors = {sample_id: error for sample_id, error in errors.items() if error is not None}
        if errors:
            dataset.add_sample_field(
                error_field,
                fo.StringField,
                description=error_field_description(label_field),
                info=field_info("errors", label_field),  # what check_error_field recognises as ours
            )
    if errors:
        view.set_values(error_field, errors, key_field="id")


def clear_mask_files(mask_dir: Path | None, label_field: str, sample_ids: Iterable[str]) -> None:
    """Remove the PNGs a previous run wrote for these samples (their labels are being replaced)."""
    if mask_dir is None:
        return
    for sample_id in sample_ids:
        shutil.rmtree(mask_folder(mask_dir, label_field, sample_id), ignore_errors=True)


def mask_paths_for(mask_dir: Path | None, label_field: str, sample_id: str, count: int) -> list[Path] | None:
    if mask_dir is None:
        return None
    folder = mask_folder(mask_dir, label_field, sample_id)
    return [folder / f"{index:04d}.png" for index in range(count)]
