"""SAM 3 video tracking: state kept and time per frame vs video length, bounded vs transformers' streaming.

* **bounded** (this project): ``gsam2.core.sam3_video.Sam3TrackingSession``, which
  drops frames, memories and per-frame bookkeeping SAM 3 can no longer use and
  ends objects unseen for ``--end-after`` frames.
* **transformers**: the streaming loop of the ``Sam3VideoModel`` docs
  (``init_video_session()``, then ``model(inference_session=..., frame=...)``
  per frame): it keeps every frame, every memory, and every object it ever saw.

Both run the same checkpoint on the same frames. "State" is the bytes of every
tensor the session holds (frames, memories, cached features); it is what grows
with the video. Figures are printed at each checkpoint of ``--frames``.

    HF_HUB_OFFLINE=1 python bench/sam3_video_memory.py                   # CPU, tiny random model
    python bench/sam3_video_memory.py --checkpoint facebook/sam3 --device cuda --frames 50 200 500
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def tensor_bytes(value, seen: set[int] | None = None) -> int:
    """Bytes of every distinct tensor reachable through dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if isinstance(value, torch.Tensor):
        if id(value) in seen:
            return 0
        seen.add(id(value))
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v, seen) for v in value)
    return 0


def session_bytes(session) -> int:
    seen: set[int] = set()
    return sum(
        tensor_bytes(part, seen)
        for part in (dict(session.processed_frames or {}), session.output_dict_per_obj, vars(session.cache))
    )


def tiny_checkpoint(folder: Path) -> str:
    spec = importlib.util.spec_from_file_location("tiny_sam3", REPO_ROOT / "tests" / "tiny_sam3.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    model, processor = tiny.build_sam3_video()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def run_bounded(tracker, phrases, frames, checkpoints, end_after):
    from gsam2.core.sam3_video import Sam3TrackingSession

    session = Sam3TrackingSession(tracker, phrases, end_after)
    yield from _timed(frames, checkpoints, session.step, lambda: session.session)


def run_transformers(tracker, phrases, frames, checkpoints):
    processor, model = tracker.processor, tracker.model
    state = processor.init_video_session(inference_device=tracker.device)
    processor.add_text_prompt(state, phrases)

    def step(frame):
        inputs = processor(images=frame, return_tensors="pt")
        with torch.inference_mode():
            output = model(inference_session=state, frame=inputs.pixel_values[0].to(tracker.device))
        processor.postprocess_outputs(state, output, original_sizes=inputs.original_sizes)

    yield from _timed(frames, checkpoints, step, lambda: state)


def _timed(frames, checkpoints, step, state):
    recent: list[float] = []
    for count, frame in enumerate(frames, start=1):
        started = time.perf_counter()
        step(frame)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        recent = (recent + [time.perf_counter() - started])[-5:]
        if count in checkpoints:
            session = state()
            yield count, session_bytes(session), len(session.obj_ids), float(np.median(recent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="SAM 3 video checkpoint (default: a tiny random one, built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=[10, 20, 40], help="report after these many")
    parser.add_argument("--size", default="320x240", help="frame WIDTHxHEIGHT (default 320x240)")
    parser.add_argument("--prompt", default="car. person.")
    parser.add_argument("--end-after", type=int, default=5, help="bounded variant: frames before a track ends")
    args = parser.parse_args()

    from gsam2.core.backends import load_sam3_tracker
    from gsam2.core.prompts import parse_prompt

    width, height = (int(v) for v in args.size.split("x"))
    checkpoints = sorted(set(args.frames))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(checkpoints[-1])]
    phrases = parse_prompt(args.prompt)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.checkpoint or tiny_checkpoint(Path(folder))
        tracker = load_sam3_tracker(f"sam3:{checkpoint}", device=args.device)
        print(f"checkpoint {checkpoint}, {width}x{height}, phrases {phrases}, device {args.device}")
        print(f"{'variant':<13}{'frames':>7}{'state MB':>10}{'objects':>9}{'s/frame':>9}")
        figures = {}
        for name, run in (
            ("bounded", run_bounded(tracker, phrases, frames, checkpoints, args.end_after)),
            ("transformers", run_transformers(tracker, phrases, frames, checkpoints)),
        ):
            for count, state, objects, seconds in run:
                figures[name, count] = (state, seconds)
                print(f"{name:<13}{count:>7}{state / 2**20:>10.2f}{objects:>9}{seconds:>9.3f}")
    last = checkpoints[-1]
    (bounded_state, bounded_time), (full_state, full_time) = figures["bounded", last], figures["transformers", last]
    print(
        f"at {last} frames: state {full_state / max(bounded_state, 1):.1f}x smaller, "
        f"{full_time / bounded_time:.2f}x faster per frame (bounded vs transformers)"
    )


if __name__ == "__main__":
    main()
