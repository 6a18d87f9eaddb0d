"""The CVAT tracker function's memory and time per object, at 1, 8 and 32 objects on a frame.

Each run is a fresh process holding the SAM 2 tracker function (``gsam2.nuclio.handlers.tracker``,
called through nuclio_sdk's Context as Nuclio calls it) with the full-size SAM 2.1
Hiera-tiny architecture at 1024 px (random weights: speed and memory do not depend on
them). It starts N objects on one frame and tracks them over ``--steps`` more frames,
sending each request the way CVAT before 2.40 did (shapes and states), which both the
current and earlier versions of the function accept. It reports the RSS the objects
add (after the model is loaded) and the milliseconds per object per frame.

    python bench/cvat_tracker.py                         # this checkout
    python bench/cvat_tracker.py --repo /path/to/older/checkout   # the same numbers for another version
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent

RUN_ONE = r"""
import base64, gc, io, json, os, sys, time
import numpy as np, psutil, nuclio_sdk
from PIL import Image
from gsam2.nuclio.handlers import tracker

count, steps = int(sys.argv[1]), int(sys.argv[2])
def b64(frame):
    buffer = io.BytesIO(); Image.fromarray(frame).save(buffer, format="JPEG"); return base64.b64encode(buffer.getvalue()).decode()
def frame(i):
    image = np.full((720, 1280, 3), 70, np.uint8)
    for k in range(count):
        x, y = 20 + (k % 8) * 150 + 3 * i, 20 + (k // 8) * 170
        image[y : y + 120, x : x + 120] = ((40 * k) % 255, 200, 90)
    return image
def call(payload):
    response = tracker.handler(context, nuclio_sdk.Event(body=payload, content_type="application/json"))
    assert response.status_code == 200, response.body
    return json.loads(response.body)

class Log:
    def info(self, *a, **k): pass
    warn = error = debug = info
context = nuclio_sdk.Context(logger=Log())
context.user_data = type("UserData", (), {})()
tracker.init_context(context)
process = psutil.Process()
frames = [b64(frame(i)) for i in range(steps + 1)]
shapes = [[20 + (k % 8) * 150, 20 + (k // 8) * 170, 140 + (k % 8) * 150, 140 + (k // 8) * 170] for k in range(count)]
# Warm-up, so that first-call allocations (the allocator's pools, lazy buffers) are not counted as objects':
# one object started and stepped on frames of the same size, then forgotten.
warm = call({"image": frames[0], "shapes": [[1, 1, 30, 30]], "states": [None]})
call({"image": frames[1], "shapes": warm["shapes"], "states": warm["states"]})
if hasattr(context.user_data, "memories"):
    context.user_data.memories = type(context.user_data.memories)(10**6, 3600, *(
        (context.user_data.memories.max_weight, context.user_data.memories.weigh)
        if hasattr(context.user_data.memories, "weigh") else ()))
gc.collect()
baseline = process.memory_info().rss
started = time.perf_counter()
body = call({"image": frames[0], "shapes": shapes, "states": [None] * count})
init_seconds = time.perf_counter() - started
started = time.perf_counter()
for image in frames[1:]:
    body = call({"image": image, "shapes": body["shapes"], "states": body["states"]})
step_seconds = (time.perf_counter() - started) / steps
print(json.dumps({"objects": count, "rss_mib": (process.memory_info().rss - baseline) / 2**20,
                  "init_ms_per_object": 1000 * init_seconds / count,
                  "step_ms_per_object": 1000 * step_seconds / count,
                  "state_bytes": max(len(json.dumps(s)) for s in body["states"]),
                  # what the function itself counts as its objects' SAM 2 memory (versions that weigh it)
                  "held_mib_per_object": (context.user_data.memories.weight / 2**20 / count
                                          if hasattr(context.user_data.memories, "weight") else None)}))
"""


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=BENCH_DIR.parent, help="checkout whose gsam2 to measure")
    args = parser.parse_args()
    video_bench = _load("video_tracking", BENCH_DIR / "video_tracking.py")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = video_bench.build_checkpoint(Path(folder), full_size=True)
        # The checkout must import as `gsam2`: a folder named gsam2 linking to it.
        link_root = Path(folder) / "path"
        link_root.mkdir()
        (link_root / "gsam2").symlink_to(args.repo.resolve(), target_is_directory=True)
        env = dict(os.environ, PYTHONPATH=str(link_root), GSAM2_TRACKER=checkpoint, GSAM2_DEVICE="cpu",
                   HF_HUB_OFFLINE="1", GSAM2_TRACKER_MAX_OBJECTS="64")
        print("| objects | RSS added (MiB) | MiB per object | SAM 2 memory held, MiB per object | "
              "start, ms per object | step, ms per object | state bytes |")
        print("|---|---|---|---|---|---|---|")
        for count in args.counts:
            result = subprocess.run([sys.executable, "-c", RUN_ONE, str(count), str(args.steps)], env=env,
                                    capture_output=True, text=True, timeout=3600)
            if result.returncode:
                print(result.stderr[-3000:], file=sys.stderr)
                continue
            row = json.loads(result.stdout.strip().splitlines()[-1])
            held = "n/a" if row["held_mib_per_object"] is None else f"{row['held_mib_per_object']:.1f}"
            print(f"| {count} | {row['rss_mib']:.0f} | {row['rss_mib'] / count:.1f} | {held} | "
                  f"{row['init_ms_per_object']:.0f} | {row['step_ms_per_object']:.0f} | {row['state_bytes']} |",
                  flush=True)


if __name__ == "__main__":
    main()
