"""``gsam2 video`` frames/s against SAM 2's raw streaming step on the same frames and objects.

Three loops, each in a fresh process, on one generated video:

* **model only**: SAM 2's streaming forward alone (``Sam2VideoModel(inference_session=...,
  frame=...)``) on frames decoded and preprocessed beforehand: the ceiling.
* **raw loop**: the streaming loop of the transformers docs: per frame the processor,
  the forward, ``post_process_masks`` (frames decoded beforehand).
* **gsam2 video**: the real command (``cli.main``) from the file: decoding ahead, the
  detector and SAM 2 image masks on frame 0 (``--step`` past the end, so later frames
  only track), ``--prompt-type box``, masks upsampled on the device, JSONL with RLE
  written in the background; ``--no-draw``, then with drawing (MP4).

All track the same objects: the raw loops are prompted with the boxes of the
objects ``gsam2 video`` tracks on frame 0. The command's process also times SAM 2's forward inside it, so "host
per frame" is its time outside SAM 2's own step: (wall - forward) / frames.

    HF_HUB_OFFLINE=1 python bench/video_overhead.py                        # tiny models, CPU
    python bench/video_overhead.py --device cuda --frames 500 --size 720x1280 \\
        --tracker facebook/sam2.1-hiera-tiny --detector IDEA-Research/grounding-dino-tiny \\
        --segmenter facebook/sam2.1-hiera-tiny
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
PROMPT = "red square. blue square."


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ForwardClock:
    """Wall seconds inside a module's forward (SAM 2's own step)."""

    def __init__(self, module):
        self.seconds, self.calls, inner = 0.0, 0, module.forward

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        module.forward = timed


def raw_loop(video: str, tracker_name: str, boxes: np.ndarray, device: str, model_only: bool) -> dict:
    from gsam2.core.devices import inference_context
    from gsam2.core.backends import load_tracker
    from gsam2.core.video_io import iter_frames

    tracker = load_tracker(tracker_name, device=device)
    processor, model = tracker.processor, tracker.model
    frames = [frame for _, frame in iter_frames(video)]  # decoded beforehand: not what is measured
    size = frames[0].shape[:2]
    pixels = [processor(images=frame, return_tensors="pt").pixel_values[0] for frame in frames] if model_only else None
    clock = ForwardClock(model)
    session = processor.init_video_session(inference_device=tracker.device)
    ids = list(range(1, len(boxes) + 1))
    processor.add_inputs_to_inference_session(
        session, frame_idx=0, obj_ids=ids, input_boxes=[boxes.tolist()], original_size=size
    )
    started = time.perf_counter()
    with inference_context(tracker.device):
        for index, frame in enumerate(frames):
            if model_only:
                model(inference_session=session, frame=pixels[index], frame_idx=index)
                continue
            pixel_values = processor(images=frame, return_tensors="pt").pixel_values[0]
            output = model(inference_session=session, frame=pixel_values, frame_idx=index)
            processor.post_process_masks([output.pred_masks], original_sizes=[size])
    seconds = time.perf_counter() - started
    return {"frames": len(frames), "seconds": seconds, "forward_seconds": clock.seconds}


def command_loop(video: str, names: dict, device: str, threshold: float, draw: bool, workdir: str) -> dict:
    from gsam2 import cli
    from gsam2.core.backends import load_tracker

    clock = ForwardClock(load_tracker(names["tracker"], device=device).model)  # the cached one the CLI gets
    argv = ["video", "--input", video, "--prompt", PROMPT, "--output", workdir, "--quiet", "--device", device]
    argv += ["--detector", names["detector"], "--segmenter", names["segmenter"], "--tracker", names["tracker"]]
    argv += ["--box-threshold", str(threshold), "--text-threshold", "0", "--step", "1000000", "--prompt-type", "box"]
    argv += [] if draw else ["--no-draw"]
    started = time.perf_counter()
    status = cli.main(argv)
    seconds = time.perf_counter() - started
    assert status == 0, status
    lines = (Path(workdir) / (Path(video).stem + ".jsonl")).read_text().splitlines()
    objects = len(json.loads(lines[0])["objects"])
    return {"frames": len(lines), "seconds": seconds, "forward_seconds": clock.seconds, "objects": objects}


def child(spec: dict) -> dict:
    if spec.get("torch_threads"):
        import torch

        torch.set_num_threads(spec["torch_threads"])
    if spec["loop"] in ("model only", "raw loop"):
        boxes = np.asarray(spec["boxes"], np.float32)
        return raw_loop(spec["video"], spec["names"]["tracker"], boxes, spec["device"], spec["loop"] == "model only")
    return command_loop(
        spec["video"], spec["names"], spec["device"], spec["threshold"], spec["loop"].endswith("draw"), spec["out"]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", default="240x320", help="HEIGHTxWIDTH of the generated video")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tracker", help="SAM 2 video checkpoint (default: the tiny test model)")
    parser.add_argument("--detector", help="Grounding DINO checkpoint (default: the tiny test model)")
    parser.add_argument("--segmenter", help="SAM 2 checkpoint (default: the tiny test model)")
    parser.add_argument("--box-threshold", type=float, default=None, help="default: the 4th best score on frame 0")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(child(json.loads(Path(args._child).read_text()))))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="gsam2-video-bench-") as folder:
        folder = Path(folder)
        names = {"tracker": args.tracker, "detector": args.detector, "segmenter": args.segmenter}
        if not all(names.values()):
            tiny = _load("make_tiny_models", REPO_ROOT / "tests" / "make_tiny_models.py")
            written = tiny.write_tiny_models(folder / "models")
            defaults = {"tracker": "sam2-video", "detector": "grounding-dino", "segmenter": "sam2"}
            names = {key: value or str(written[defaults[key]]) for key, value in names.items()}
        height, width = (int(v) for v in args.size.split("x"))
        media = _load("media", REPO_ROOT / "tests" / "media.py")
        video = folder / "squares.mp4"
        media.write_video(video, media.moving_squares(args.frames, height, width), codec="mpeg4")
        threshold = args.box_threshold
        if threshold is None:  # random weights: keep about 4 objects
            scores = frame_zero_scores(str(video), names["detector"], args.device)
            threshold = float(np.sort(scores)[-4]) if len(scores) >= 4 else 0.0
        boxes: list = []
        # The command first: the raw loops then prompt SAM 2 with the boxes of the objects it tracks on
        # frame 0, so that all loops track as many objects.
        for loop in ("gsam2 video", "gsam2 video + draw", "model only", "raw loop"):
            out = folder / loop.replace(" ", "-").replace("+", "")
            out.mkdir()
            spec = {"loop": loop, "video": str(video), "names": names, "device": args.device,
                    "threshold": threshold, "boxes": boxes, "out": str(out),
                    "torch_threads": args.torch_threads}
            spec_path = folder / "spec.json"
            spec_path.write_text(json.dumps(spec))
            done = subprocess.run([sys.executable, __file__, "--_child", str(spec_path)],
                                  capture_output=True, text=True, check=True)
            row = {"loop": loop, **json.loads(done.stdout.strip().splitlines()[-1])}
            if loop == "gsam2 video":
                first = json.loads((out / "squares.jsonl").read_text().splitlines()[0])
                boxes = [item["bbox"] for item in first["objects"]]
            row["fps"] = row["frames"] / row["seconds"]
            row["host_ms_per_frame"] = 1000 * (row["seconds"] - row["forward_seconds"]) / row["frames"]
            row.setdefault("objects", len(boxes))
            rows.append(row)
            print(f"{loop:<20} {row['frames']:>5} frames  {row['fps']:7.1f} frames/s  "
                  f"SAM 2 forward {1000 * row['forward_seconds'] / row['frames']:6.1f} ms/frame  "
                  f"outside it {row['host_ms_per_frame']:6.1f} ms/frame  ({row['objects']} objects)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def frame_zero_scores(video: str, detector: str, device: str) -> np.ndarray:
    from gsam2.core import load_detector
    from gsam2.core.video_io import iter_frames

    _, frame = next(iter(iter_frames(video)))
    [found] = load_detector(detector, device=device).detect([frame], ["red square", "blue square"], 0.0, 0.0)
    return found.confidence


if __name__ == "__main__":
    sys.exit(main())
