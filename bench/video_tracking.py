"""Tracking speed and peak memory vs video length: streaming vs decode-everything-first.

* **streaming** (this project): frames decoded one at a time from the file
  (``gsam2.core.video_io.iter_frames``) and fed to SAM 2's streaming session,
  with frames and memories SAM 2 can no longer use dropped as it goes
  (``gsam2.core.video_pipeline.track_from_boxes``).
* **reference** (the original demo scripts): decode the whole video to a folder
  of JPEGs, read them all back, ``init_video_session(video=frames)`` on all of
  them, then ``propagate_in_video_iterator``.

Both track the same object from the same box prompt on frame 0, with the same
SAM 2 video checkpoint, in a fresh process per (variant, length) so that peak
memory is each run's own (see ``image_pipeline.MemoryMeter``).

    HF_HUB_OFFLINE=1 python bench/video_tracking.py                      # CPU, tiny model
    python bench/video_tracking.py --device cuda --full-size --lengths 100 1000 10000
    python bench/video_tracking.py --tracker facebook/sam2.1-hiera-tiny --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_checkpoint(folder: Path, full_size: bool) -> str:
    tiny = _load("make_tiny_models", REPO_ROOT / "tests" / "make_tiny_models.py")
    if full_size:
        from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor

        _, processor = tiny.build_sam2_video()
        model = Sam2VideoModel(Sam2VideoConfig())  # default = SAM 2 Hiera-tiny sizes, 1024 px, random weights
        from transformers import Sam2ImageProcessor, Sam2VideoVideoProcessor

        processor = Sam2VideoProcessor(image_processor=Sam2ImageProcessor(), video_processor=Sam2VideoVideoProcessor())
    else:
        model, processor = tiny.build_sam2_video()
    target = folder / "sam2-video"
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return str(target)


def make_video(path: Path, frames: int) -> None:
    media = _load("media", REPO_ROOT / "tests" / "media.py")
    media.write_video(path, media.moving_squares(frames, 96, 128), codec="mpeg4")


def child(variant: str, video: str, tracker_checkpoint: str, device: str) -> dict:
    from gsam2.core.backends import load_tracker
    from gsam2.core.devices import inference_context
    from gsam2.core.video_io import iter_frames
    from gsam2.core.video_pipeline import BoxPrompt, track_from_boxes
    from image_pipeline import MemoryMeter  # noqa: E402 - bench/ is on sys.path when run as a script

    tracker = load_tracker(tracker_checkpoint, device=device)
    meter = MemoryMeter(tracker.device)
    box = np.array([4, 8, 20, 24], np.float32)
    meter.start()
    started = time.perf_counter()
    frames = 0
    if variant == "streaming":
        for _ in track_from_boxes(iter_frames(video), [BoxPrompt(0, box, "red")], tracker):
            frames += 1
    else:
        from PIL import Image

        with tempfile.TemporaryDirectory() as folder:
            for index, frame in iter_frames(video):  # step 1: the whole video to JPEGs
                Image.fromarray(frame).save(f"{folder}/{index:05d}.jpg", quality=95)
            images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(folder).glob("*.jpg"))]
        processor, model = tracker.processor, tracker.model
        session = processor.init_video_session(video=images, inference_device=tracker.device)
        processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=[1], input_boxes=[[box.tolist()]])
        with inference_context(tracker.device):
            model(inference_session=session, frame_idx=0)  # the prompted frame, as the HF docs do
            for output in model.propagate_in_video_iterator(session):
                processor.post_process_masks([output.pred_masks], original_sizes=[[images[0].shape[0], images[0].shape[1]]])
                frames += 1
    seconds = time.perf_counter() - started
    return {"variant": variant, "frames": frames, "seconds": seconds, "fps": frames / seconds, **meter.stop()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="default SAM 2 video architecture, random weights")
    parser.add_argument("--tracker", help="a real SAM 2 video checkpoint instead of a generated one")
    parser.add_argument("--skip-reference-above", type=int, default=2000,
                        help="skip the reference for longer videos (it holds every frame in memory)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(*args._child)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.tracker or build_checkpoint(Path(folder), args.full_size)
        for length in args.lengths:
            video = Path(folder) / f"video-{length}.mp4"
            make_video(video, length)
            for variant in ("streaming", "reference"):
                if variant == "reference" and length > args.skip_reference_above:
                    continue
                command = [sys.executable, __file__, "--_child", variant, str(video), checkpoint, args.device]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["length"] = length
                rows.append(row)
                print(f"{length:>6} frames  {variant:<9}  {row['fps']:7.1f} frames/s  "
                      f"peak +{row['peak_growth_bytes'] / 2**20:8.1f} MiB", flush=True)
    for length in args.lengths:
        pair = {r["variant"]: r for r in rows if r["length"] == length}
        if len(pair) == 2:
            s, r = pair["streaming"], pair["reference"]
            print(f"{length:>6} frames: streaming/reference speed {s['fps'] / r['fps']:.2f}x, "
                  f"peak memory {s['peak_growth_bytes'] / max(r['peak_growth_bytes'], 1):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
