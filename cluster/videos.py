"""``gsam2 video --ray``: many videos tracked in parallel, each video on one actor.

A video's tracking is one sequential state (object ids, SAM 2's memory), so a video is the unit of work:
each row is one video, an actor (:class:`VideoWorker`, the spec's detector, SAM 2 and tracker loaded once)
tracks it from its first frame to its last with the same loop as a local run
(:func:`~..cli.video.track_video`) and writes ``OUT/<name>.jsonl`` and ``.mp4`` itself: decoding, tracking
and encoding a video overlap inside that loop already (read-ahead and write-behind threads), and moving
every frame through the object store would only add copies. The driver gets one
:class:`~..cli.video.VideoOutcome` per video.

An actor killed in the middle of a video is started again by Ray and the video is tracked again from the
start (the JSON lines are rewritten from the top, the MP4 goes to a new temporary name): a video's outputs
are one run's, never two halves.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .workers import RunWorker, crash_once_if_asked, error_line, worker_options


class VideoWorker(RunWorker):
    """One actor: tracks the videos of its batches one by one; each row's outcome travels pickled."""

    def __init__(self, spec: dict[str, Any], output: str, start_frame: int, stride: int, draw: bool,
                 crash_marker: str | None = None, formats: Sequence[str] = ("jsonl",)):
        super().__init__(spec, "video", crash_marker)
        self.output, self.start_frame, self.stride, self.draw = Path(output), start_frame, stride, draw
        self.formats = tuple(formats)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from ..cli.video import VideoOutcome, track_video
        from ..core.video_io import probe_video

        crash_once_if_asked()
        outcomes = []
        for source, name in zip(batch["source"], batch["name"]):
            try:
                info = probe_video(source)
                outcome = track_video(self.run, source, info, self.output, name, self.start_frame, self.stride,
                                      self.draw, formats=self.formats)
            except Exception as error:  # noqa: BLE001 - this video's failure, not the run's
                outcome = VideoOutcome(source, error=error_line(error))
            outcomes.append(pickle.dumps(outcome))
        return {"index": batch["index"], "outcome": np.array(outcomes, dtype=object)}


def track_videos_on_ray(
    jobs: Sequence[Any],
    spec: dict[str, Any],
    output: Path,
    start_frame: int,
    stride: int,
    draw: bool,
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float | None = None,
    crash_marker: str | None = None,
    formats: Sequence[str] = ("jsonl",),
) -> Iterator[Any]:
    """Track every job's video (:class:`~..cli.video.VideoJob`) on a pool of ``workers`` actors; yield outcomes
    as videos finish. Ray must be connected (:func:`~.workers.connect`)."""
    import os

    import ray

    from .workers import CRASH_ONCE_ENV

    if not jobs:
        return
    rows = [{"index": i, "source": str(job.source), "name": job.name} for i, job in enumerate(jobs)]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        VideoWorker,
        fn_constructor_args=(spec, str(output), start_frame, stride, draw,
                             crash_marker or os.environ.get(CRASH_ONCE_ENV), tuple(formats)),
        batch_size=1,  # one video per call: videos spread over the actors as they free up
        **worker_options(workers, gpus_per_worker, cpus_per_worker),
    )
    for row in dataset.iter_rows():
        yield pickle.loads(row["outcome"])
