"""Label a whole CVAT task with Grounded SAM 2 through cvat-sdk: ``gsam2 cvat annotate`` and ``gsam2 cvat track``.

Works against any CVAT (self-hosted or cvat.ai). The task's own label names are the
prompt (or ``--prompt``, whose phrases must name task labels). Frames are streamed chunk
by chunk. ``annotate`` uploads shapes frame by frame's results; ``track`` runs the video
pipeline (stable ids) and uploads one CVAT track per object: its shapes on the frames
where it is seen and an ``outside`` shape where it ends, so that an annotator can correct
keyframes and CVAT interpolates. Each object takes the richest shape its label allows:
a mask for ``mask`` (and, in shapes, ``any``) labels, a polygon for ``polygon`` (and, in
tracks, ``any``: CVAT interpolates polygons, not masks), a box for ``rectangle``.

What we upload is marked ``source: auto``; ``replace=True`` first deletes the ``auto``
shapes and tracks of the labels this run writes (manual and semi-automatic work is never
touched), so a re-run leaves one set.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from ...core.errors import InputError
from ...core.images import decode_image
from ...core.masks import mask_crop
from ...core.prompts import label_phrase, parse_prompt
from ..handlers.protocol import mask_bounds, polygon_points

MARK = "auto"  # the source of what we upload, and of what --replace removes


@dataclass
class TaskLabel:
    id: int
    name: str
    type: str  # "mask", "polygon", "rectangle", "any", ...


@dataclass
class LabelingSummary:
    frames: int = 0
    objects: int = 0  # shapes (annotate) or tracks (track)
    removed: int = 0
    failures: list[str] = field(default_factory=list)  # "frame N: why", one per frame that failed


def connect():
    """A cvat-sdk client from the environment: ``CVAT_URL`` and ``CVAT_ACCESS_TOKEN`` or ``CVAT_USER`` + ``CVAT_PASSWORD``."""
    from cvat_sdk.api_client.exceptions import ApiException
    from cvat_sdk.core.client import AccessTokenCredentials, Client
    from urllib3.exceptions import HTTPError

    url = os.environ.get("CVAT_URL", "").strip()
    if not url:
        raise InputError("CVAT_URL is not set: export CVAT_URL=https://app.cvat.ai (or your server)")
    token = os.environ.get("CVAT_ACCESS_TOKEN", "").strip()
    user, password = os.environ.get("CVAT_USER", ""), os.environ.get("CVAT_PASSWORD", "")
    if not token and not (user and password):
        raise InputError("no CVAT credentials: set CVAT_ACCESS_TOKEN, or CVAT_USER and CVAT_PASSWORD")
    try:
        # The SDK warns about any server older than itself; the calls used here work with CVAT >= 2.40.
        client = Client(url.rstrip("/"), check_server_version=False)
        client.login(AccessTokenCredentials(token) if token else (user, password))
        client.api_client.users_api.retrieve_self()  # a token is only checked on first use
        return client
    except ApiException as error:
        if error.status in (400, 401, 403):  # CVAT answers a wrong password with 400 at login
            raise InputError(f"CVAT at {url} refused the credentials ({error.status} {error.reason})") from None
        raise InputError(f"CVAT at {url} answered {error.status} {error.reason}") from None
    except (HTTPError, OSError) as error:
        raise InputError(f"cannot reach CVAT at {url} ({type(error).__name__})") from None


def open_task(client, task_id: int):
    from cvat_sdk.api_client.exceptions import ApiException

    try:
        return client.tasks.retrieve(task_id)
    except ApiException as error:
        if error.status == 404:
            raise InputError(f"task {task_id}: not found on {client.api_map.host} (or not visible to you)") from None
        raise InputError(f"task {task_id}: CVAT answered {error.status} {error.reason}") from None


def task_labels(task) -> list[TaskLabel]:
    return [TaskLabel(int(label.id), label.name, str(label.type)) for label in task.get_labels()]


def phrase_labels(labels: list[TaskLabel], prompt: str | None, task_id: int) -> dict[str, TaskLabel]:
    """``{phrase: task label}``: the task's label names, or the prompt's phrases matched to them.

    Names and phrases are compared as :func:`label_phrase` reads them (case,
    repeated spaces, end periods and Unicode forms do not count), the form the
    detector is prompted with and its phrases are mapped back through: a label
    ``Traffic  Light`` is prompted as ``traffic light`` and gets its objects.
    """
    usable = [label for label in labels if label.type not in ("skeleton", "points", "tag", "cuboid", "ellipse")]
    by_phrase: dict[str, list[TaskLabel]] = {}
    for label in usable:
        by_phrase.setdefault(label_phrase(label.name), []).append(label)

    def the_label(phrase: str) -> TaskLabel:
        found = by_phrase[phrase]
        if len(found) > 1:
            names = " and ".join(repr(label.name) for label in found)
            raise InputError(
                f"task {task_id}: labels {names} both read as {phrase!r}; rename one, or leave it out with --prompt"
            )
        if not any(character.isalnum() for character in phrase):
            raise InputError(
                f"task {task_id}: label {found[0].name!r} has no letter or digit to prompt the detector with; "
                "name the labels to detect with --prompt"
            )
        return found[0]

    if not prompt:
        if not by_phrase:
            raise InputError(f"task {task_id} has no label that can hold a mask, polygon or box")
        return {phrase: the_label(phrase) for phrase in by_phrase}
    mapping = {}
    for phrase in parse_prompt(prompt):
        phrase = label_phrase(phrase)
        if phrase not in by_phrase:
            names = ", ".join(label.name for label in usable) or "none"
            raise InputError(f"prompt phrase {phrase!r} matches no label of task {task_id} (its labels: {names})")
        mapping[phrase] = the_label(phrase)
    return mapping


@dataclass(frozen=True)
class FrameRange:
    """The frames a run labels: the whole task, or one job's ``[first, last]`` (task frame numbers)."""

    first: int = 0
    last: int | None = None

    def __contains__(self, frame: int) -> bool:
        return frame >= self.first and (self.last is None or frame <= self.last)


def job_range(client, job_id: int) -> tuple[int, FrameRange]:
    """``(task id, frames)`` of a CVAT job."""
    from cvat_sdk.api_client.exceptions import ApiException

    try:
        job = client.jobs.retrieve(job_id)
    except ApiException as error:
        if error.status == 404:
            raise InputError(f"job {job_id}: not found on {client.api_map.host} (or not visible to you)") from None
        raise InputError(f"job {job_id}: CVAT answered {error.status} {error.reason}") from None
    return int(job.task_id), FrameRange(int(job.start_frame), int(job.stop_frame))


def stream_frames(task, frames: FrameRange = FrameRange()) -> Iterator[tuple[int, np.ndarray]]:
    """The frames in order, one chunk (a zip of images or a video segment) downloaded at a time.

    Only the chunks that hold frames of ``frames`` are downloaded.
    """
    for frame, source in stream_frame_sources(task, frames):
        yield frame, decode_frame(source)


def stream_frame_sources(task, frames: FrameRange = FrameRange()) -> Iterator[tuple[int, Any]]:
    """:func:`stream_frames`, with an image task's frames still encoded (``(name, bytes)``: :func:`decode_frame`),
    so that they decode in the engine's workers and one that cannot be read fails alone."""
    meta = task.get_meta()
    size, chunk_size = int(task.size), int(meta.chunk_size or task.data_chunk_size or 1)
    deleted = set(getattr(meta, "deleted_frames", None) or [])
    last = size - 1 if frames.last is None else min(frames.last, size - 1)
    for chunk_index in range(frames.first // chunk_size, last // chunk_size + 1):
        buffer = io.BytesIO()
        task.download_chunk(chunk_index, buffer, quality="original")
        for offset, source in enumerate(_chunk_sources(buffer.getvalue())):
            frame = chunk_index * chunk_size + offset
            if frame > last:
                return
            if frame in frames and frame not in deleted:
                yield frame, source


def decode_frame(source) -> np.ndarray:
    """A frame of :func:`stream_frame_sources` as RGB."""
    if isinstance(source, tuple):
        name, data = source
        return decode_image(data, name=name)
    return source


def _chunk_sources(data: bytes) -> Iterator[Any]:
    if data[:2] == b"PK":  # image tasks: a zip of the frames, in order
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in sorted(archive.namelist()):
                yield name, archive.read(name)
        return
    import av  # video tasks: a video segment

    with av.open(io.BytesIO(data)) as container:
        for decoded in container.decode(video=0):
            yield decoded.to_ndarray(format="rgb24")


def shape_for(
    label: TaskLabel, detections: sv.Detections, index: int, in_track: bool = False
) -> tuple[str, list[float]] | None:
    """``(type, points)`` of object ``index`` as its label allows, richest first; ``None`` if it has no pixels.

    Masks are read from their crops (``core.masks.mask_crop``: a CompactMask's
    crop, or a dense mask's full frame), never made into full frames here.

    In tracks an ``any`` label takes polygons, not masks: CVAT interpolates
    polygons between keyframes, and cannot interpolate masks (2.73:
    ``interpolate`` in cvat/apps/dataset_manager/annotation.py raises
    NotImplementedError, which fails the upload of a video task whose jobs overlap).
    """
    from ..sdk.detection import encode_crop

    has_mask = detections.mask is not None
    crop, x0, y0 = mask_crop(detections.mask, index) if has_mask else (None, 0, 0)
    bounds = mask_bounds(crop, (x0, y0)) if has_mask else None
    if label.type == "rectangle" or (bounds is None and label.type == "any" and not has_mask):
        return "rectangle", [float(v) for v in detections.xyxy[index]]
    if bounds is None:
        return None
    if label.type == "polygon" or (label.type == "any" and in_track):
        points = polygon_points(crop, (x0, y0))
        return ("polygon", points) if points else None
    return "mask", [float(v) for v in encode_crop(crop, (x0, y0), bounds)]


def check_trackable(task, mapping: dict[str, TaskLabel]) -> None:
    """Refuse mask labels on a task whose jobs overlap: CVAT cannot merge mask tracks there (see shape_for)."""
    masks = sorted({label.name for label in mapping.values() if label.type == "mask"})
    if masks and int(getattr(task, "overlap", 0) or 0) > 0:
        raise InputError(
            f"task {task.id}: its jobs overlap, and CVAT cannot merge mask tracks across them; "
            f"make the label(s) {', '.join(masks)} of type polygon or any, or use gsam2 cvat annotate"
        )


def remove_ours(task, label_ids: set[int], frames: FrameRange = FrameRange()) -> int:
    """Delete the ``auto`` shapes and tracks of these labels on these frames; return how many went."""
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    current = task.get_annotations()
    # CVAT deletes by id; the request must still be valid annotations, so the fetched ones are sent back as requests.
    shapes = [
        models.LabeledShapeRequest(id=s.id, type=s.type, frame=s.frame, label_id=s.label_id, points=s.points)
        for s in current.shapes
        if s.source == MARK and s.label_id in label_ids and s.frame in frames
    ]
    tracks = [
        models.LabeledTrackRequest(
            id=t.id, label_id=t.label_id, frame=t.frame,
            shapes=[models.TrackedShapeRequest(id=x.id, type=x.type, frame=x.frame, points=x.points) for x in t.shapes],
        )
        for t in current.tracks
        if t.source == MARK and t.label_id in label_ids and t.frame in frames
    ]
    if shapes or tracks:
        task.update_annotations(
            models.PatchedLabeledDataRequest(shapes=shapes, tracks=tracks, tags=[]), action=AnnotationUpdateAction.DELETE
        )
    return len(shapes) + len(tracks)


def upload(task, shapes: list | None = None, tracks: list | None = None) -> None:
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction

    task.update_annotations(
        models.PatchedLabeledDataRequest(shapes=shapes or [], tracks=tracks or [], tags=[]),
        action=AnnotationUpdateAction.CREATE,
    )


def annotate_task(task, mapping: dict[str, TaskLabel], run, progress=None, replace: bool = False,
                  frames: FrameRange = FrameRange(), upload_every: int = 50, on_failure=None) -> LabelingSummary:
    """Shapes on every frame, labelled by ``run`` (a :class:`~gsam2.core.run.Run`) through the engine.

    As ``gsam2 image``: frames are read ahead, labelled in batches of
    ``run.batch_size`` with the processors one batch ahead, and masks are made
    off the model's thread (:func:`~gsam2.core.engine.run_pipelined`). A frame that
    fails is reported (``summary.failures``, and ``on_failure(message)``) and the
    other frames are still labelled.
    """
    from cvat_sdk import models

    from ...core.detections import class_names
    from ...core.engine import run_pipelined
    from ...core.masks import finish_masks

    phrases = list(mapping)
    summary = LabelingSummary()
    if replace:
        summary.removed = remove_ours(task, {label.id for label in mapping.values()}, frames)

    def label(images, prepared=None):
        return run.label_images(images, prompt=phrases, prepared=prepared, compact_masks=True, defer_masks=True)

    def shapes(item, image, detections) -> list:
        detections = finish_masks(detections)  # SAM 2's logits -> mask crops, off the model's thread
        found = []
        for index, phrase in enumerate(class_names(detections)):
            label = mapping.get(label_phrase(phrase))  # a prompt-free detector's names are in its own spelling
            shape = shape_for(label, detections, index) if label else None
            if shape is not None:
                found.append(models.LabeledShapeRequest(
                    type=shape[0], frame=item[0], label_id=label.id, points=shape[1], source=MARK,
                    occluded=False, z_order=0, attributes=[], group=0,
                ))
        return found

    pending = []
    outcomes = run_pipelined(
        stream_frame_sources(task, frames), lambda item: decode_frame(item[1]), label, shapes,
        batch_size=run.batch_size, prepare=run.preparation_steps(phrases),
    )
    for outcome in outcomes:
        if outcome.error is not None:  # that frame's failure; the others of its batch still count
            summary.failures.append(f"frame {outcome.item[0]}: {outcome.error}")
            if on_failure is not None:
                on_failure(summary.failures[-1])
        else:
            summary.frames += 1
            pending += outcome.value
        if progress is not None:
            progress.update(1)
        if len(pending) >= upload_every:
            summary.objects += len(pending)
            upload(task, shapes=pending)
            pending = []
    summary.objects += len(pending)
    upload(task, shapes=pending)
    return summary


def track_task(task, mapping: dict[str, TaskLabel], run, progress=None,
               replace: bool = False, frames: FrameRange = FrameRange()) -> LabelingSummary:
    """One CVAT track per object id, tracked by ``run.track`` (detector + SAM 2 or EdgeTAM, or SAM 3)."""
    from cvat_sdk import models

    from ...core.detections import class_names

    check_trackable(task, mapping)
    summary = LabelingSummary()
    if replace:
        summary.removed = remove_ours(task, {label.id for label in mapping.values()}, frames)
    last_frame = -1
    tracks: dict[int, dict[str, Any]] = {}

    def counted(frames):
        for frame, image in frames:
            if progress is not None:
                progress.update(1)
            yield frame, image

    for result in run.track(counted(stream_frames(task, frames)), prompt=list(mapping)):
        summary.frames += 1
        last_frame = result.frame_index
        detections = result.detections
        names = class_names(detections)
        for index, object_id in enumerate(detections.tracker_id.tolist()):
            label = mapping.get(label_phrase(names[index]))
            shape = shape_for(label, detections, index, in_track=True) if label else None
            if shape is None:
                continue
            track = tracks.setdefault(object_id, {"label": label, "shapes": [], "last": None})
            track["shapes"].append(models.TrackedShapeRequest(
                type=shape[0], frame=result.frame_index, points=shape[1], outside=False, occluded=False,
                z_order=0, attributes=[],
            ))
            track["last"] = (result.frame_index, shape)
    requests = []
    for track in tracks.values():
        frame, (kind, points) = track["last"]
        if frame < last_frame:  # the object's track ends: CVAT hides it from the next frame on
            track["shapes"].append(models.TrackedShapeRequest(
                type=kind, frame=frame + 1, points=points, outside=True, occluded=False, z_order=0, attributes=[],
            ))
        requests.append(models.LabeledTrackRequest(
            label_id=track["label"].id, frame=track["shapes"][0].frame, shapes=track["shapes"], source=MARK,
            group=0, attributes=[],
        ))
    upload(task, tracks=requests)
    summary.objects = len(requests)
    return summary
