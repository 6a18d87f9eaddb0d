"""How much of an accelerator's time the bulk image path keeps busy, measured without one.

Only the model forwards are replaced: Grounding DINO's forward, SAM 2's image
encoder and its mask decoder become stand-ins that **sleep** for a GPU-like time
(a sleep releases the GIL, as a CUDA wait does) and return outputs of the real
shapes (900 queries x 256 text positions and boxes; the three Hiera feature
maps; 256x256 mask logits per box, with each mask filling its box). Everything
else is the real code: the real processors with the full-size configs
(800x1333 Grounding DINO input, 1024 px SAM 2 input), box selection, mask
upsampling and thresholding, COCO RLE, JSON, drawing, atomic file writes, and
the real ``gsam2 image`` command (``cli.main``), fed JPEG files from disk.

The **ceiling** is what the stand-ins allow: images / (N x (detector + encoder +
decoder calls per image)). The ratio of measured to ceiling is the share of
accelerator time a real GPU would spend working; the rest it waits for the host.

Two loops are run in the same invocation, each in its own process (fresh
memory figures):

* ``engine``: ``gsam2 image`` as it is now (core/engine.py: decode ahead,
  encode and write in worker threads);
* ``seed``: the one-image-at-a-time loop the demo scripts and this project's
  first CLI ran: load, detect + segment, encode, write, then the next image.

Run (2-core CPU, a few minutes)::

    HF_HUB_OFFLINE=1 python bench/image_pipeline.py --simulated-accelerator

Options: ``--images N``, ``--profiles t4,h100``, ``--sizes 1mp,2.5mp``,
``--draw`` (also with drawing), ``--batch-size``, ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

#: Per-image model times (seconds): Grounding DINO-T at 800x1333, SAM 2.1-T image encoder, one mask-decoder call.
PROFILES = {
    "t4": {"detector": 0.120, "encoder": 0.040, "decoder": 0.005},
    "h100": {"detector": 0.030, "encoder": 0.010, "decoder": 0.003},
}
#: Image size and objects per image.
SIZES = {"1mp": (1280, 800, 10), "2.5mp": (2000, 1250, 12)}
PROMPT = "car. person. bicycle. dog. traffic light. bus."


@dataclass
class Case:
    profile: str
    size: str
    draw: bool
    loop: str
    images: int
    batch_size: int
    torch_threads: int = 1


# ---------------------------------------------------------------- stand-ins


class StageClock:
    """Host CPU seconds per stage (thread CPU time: sleeps, i.e. the accelerator's time, are not counted)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def wrap_cpu(clock: StageClock, stage: str, function):
    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            clock.add(stage, time.thread_time() - start)

    return timed


class JsonClock:
    """``json`` for the CLI module, with ``dumps`` timed as its own stage."""

    def __init__(self, clock: StageClock):
        self.dumps = wrap_cpu(clock, "encode: JSON (host)", json.dumps)

    def __getattr__(self, name):
        return getattr(json, name)


class Output(dict):
    """A ModelOutput stand-in: attribute access to its tensors."""

    __getattr__ = dict.__getitem__


class SimulatedGroundingDino:
    """Grounding DINO's forward: sleeps ``seconds`` per image, returns 900 queries of which ``objects`` score high."""

    def __init__(self, config, seconds: float, objects: int, token_phrase):
        self.config, self.seconds, self.objects = config, seconds, objects
        self.phrase_tokens = [int(np.flatnonzero(token_phrase == p)[0]) for p in range(token_phrase.max() + 1)]
        self.outputs: dict[tuple[int, int], Output] = {}

    def __call__(self, input_ids, pixel_values, **_):
        batch = pixel_values.shape[0]
        time.sleep(self.seconds * batch)
        # A real model allocates its outputs on the device: made once here, so that building them
        # is not counted as host work.
        key = (batch, int(pixel_values.shape[-1]))
        if key not in self.outputs:
            self.outputs[key] = self._outputs(batch, key[1])
        return self.outputs[key]

    def _outputs(self, batch: int, seed: int) -> Output:
        import torch

        queries, text = self.config.num_queries, self.config.max_text_len
        logits = torch.full((batch, queries, text), -10.0)
        rng = np.random.default_rng(seed)
        boxes = torch.tensor(rng.uniform(0.05, 0.2, (batch, queries, 4)), dtype=torch.float32)
        boxes[..., :2] = torch.tensor(rng.uniform(0.2, 0.8, (batch, queries, 2)), dtype=torch.float32)
        for query in range(self.objects):
            logits[:, query, self.phrase_tokens[query % len(self.phrase_tokens)]] = 4.0
        return Output(logits=logits, pred_boxes=boxes)


class SimulatedSam2:
    """SAM 2's image encoder and mask decoder: sleeps, and the real shapes (masks fill their boxes)."""

    def __init__(self, encoder_seconds: float, decoder_seconds: float):
        self.encoder_seconds, self.decoder_seconds = encoder_seconds, decoder_seconds
        self.features: dict[int, list] = {}
        self.decoded: dict[tuple[bytes, int], Output] = {}

    def get_image_embeddings(self, pixel_values):
        import torch

        batch = pixel_values.shape[0]
        time.sleep(self.encoder_seconds * batch)
        if batch not in self.features:  # device memory on a real GPU: allocated once here
            self.features[batch] = [torch.zeros(batch, c, s, s) for c, s in ((32, 256), (64, 128), (256, 64))]
        return self.features[batch]

    def __call__(self, image_embeddings, multimask_output=False, input_boxes=None, **_):
        time.sleep(self.decoder_seconds)
        count, k = input_boxes.shape[1], 3 if multimask_output else 1
        # Device memory on a real GPU: made once per distinct prompt here (the detector stand-in's boxes
        # repeat from batch to batch), so that building it is not counted as host work.
        key = (input_boxes.numpy().tobytes(), k)
        if key not in self.decoded:
            self.decoded[key] = self._masks(input_boxes, count, k)
        return self.decoded[key]

    @staticmethod
    def _masks(input_boxes, count: int, k: int) -> Output:
        import torch

        masks = torch.full((1, count, k, 256, 256), -4.0)
        # input_boxes are in the 1024-px input frame; the logits are 256 px: a quarter.
        for index, (x1, y1, x2, y2) in enumerate((input_boxes[0] / 4).round().int().tolist()):
            masks[0, index, :, max(y1, 0) : max(y2, 1), max(x1, 0) : max(x2, 1)] = 4.0
        return Output(pred_masks=masks, iou_scores=torch.full((1, count, k), 0.9))


def install_models(profile: dict[str, float], objects: int, clock: StageClock, folder: Path) -> tuple[str, str]:
    """Put the simulated detector and segmenter where the CLI's loaders find them; return their names."""
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoImageProcessor, GroundingDinoProcessor, Sam2Processor

    from gsam2.core import backends as models
    from gsam2.core.detectors.grounding_dino import GroundingDinoDetector
    from gsam2.core.segmenter import Sam2ImageSegmenter

    sys.path.insert(0, str(REPO / "tests"))
    from make_tiny_models import build_tokenizer  # a small vocabulary: tokenising is not what is measured

    device = torch.device("cpu")
    detector_processor = GroundingDinoProcessor(GroundingDinoImageProcessor(), build_tokenizer())  # 800x1333
    detector = GroundingDinoDetector.__new__(GroundingDinoDetector)
    detector.processor, detector.device, detector.max_text_len = detector_processor, device, 256
    token_phrase = detector.token_phrase_map([p.strip() for p in PROMPT.split(".") if p.strip()])
    detector.model = SimulatedGroundingDino(GroundingDinoConfig(), profile["detector"], objects, token_phrase)
    sam2_processor = Sam2Processor.from_pretrained(str(write_sam2_processor(folder)))
    segmenter = Sam2ImageSegmenter(SimulatedSam2(profile["encoder"], profile["decoder"]), sam2_processor, device)
    # preprocess runs in the engine's prepare thread, one batch ahead (inline in the seed loop).
    detector.preprocess = wrap_cpu(clock, "detect: preprocess (host)", detector.preprocess)
    segmenter.preprocess = wrap_cpu(clock, "segment: preprocess (host)", segmenter.preprocess)
    detector.detect = wrap_cpu(clock, "detect (pre/post, host)", detector.detect)
    segmenter.embed = wrap_cpu(clock, "segment: encoder (pre, host)", segmenter.embed)
    segmenter.segment_boxes = wrap_cpu(clock, "segment: decoder + masks (host)", segmenter.segment_boxes)
    names = ("simulated/grounding-dino", "simulated/sam2")
    models._cache[("detector:grounding-dino", names[0], str(device))] = detector
    models._cache[("segmenter:sam2", names[1], str(device))] = segmenter
    return names


def write_sam2_processor(folder: Path) -> Path:
    """The full-size SAM 2 processor's files (1024-px input), written from its defaults."""
    from transformers import Sam2ImageProcessor, Sam2Processor

    target = folder / "sam2-processor"
    if not target.exists():
        Sam2Processor(Sam2ImageProcessor()).save_pretrained(target)
    return target


# ---------------------------------------------------------------- the two loops


def seed_loop(files: list[Path], output: Path, detector_name: str, segmenter_name: str, draw: bool) -> None:
    """One image at a time, every stage in turn, as the demo scripts (and our first CLI) did."""
    from PIL import Image

    from gsam2.core import detections_to_record, draw_detections, ground_and_segment
    from gsam2.core import images as images_module  # its load_image, timed by run_case

    for path in files:
        image = images_module.load_image(path)
        [detections] = ground_and_segment(
            [image], PROMPT, detector=detector_name, segmenter=segmenter_name, box_threshold=0.3, text_threshold=0.25
        )
        (output / f"{path.stem}.json").write_text(
            json.dumps(detections_to_record(detections, path, image.shape[:2]), indent=2)
        )
        if draw:
            Image.fromarray(draw_detections(image, detections)).save(output / f"{path.stem}.jpg", quality=90)


def run_case(case: Case, workdir: Path) -> dict:
    """Measure one case in this process (called in a fresh child)."""
    import torch

    from gsam2 import cli
    from gsam2.core import image_files  # where gsam2 image decodes, encodes and writes

    # The processors' resize/normalise and SAM 2's mask upsampling run on the model's device; on a
    # GPU they are device work and the host's torch thread pool is idle. Here the "device" is the
    # CPU, and with torch's default pool its OpenMP workers spin between those small ops on the
    # same 2 cores as the decode and encode threads (measured 99 -> 71 ms host CPU per image at
    # 1 MP). One torch thread keeps that work's cost without the artefact (--torch-threads).
    if case.torch_threads:
        torch.set_num_threads(case.torch_threads)

    width, height, objects = SIZES[case.size]
    profile = PROFILES[case.profile]
    clock = StageClock()
    detector_name, segmenter_name = install_models(profile, objects, clock, workdir)
    files = sorted((workdir / f"images-{case.size}").glob("*.jpg"))[: case.images]
    output = workdir / f"out-{case.loop}-{case.profile}-{case.size}-{case.draw}"
    output.mkdir()
    import gsam2.core.images as images_module

    real_load = images_module.load_image
    images_module.load_image = wrap_cpu(clock, "decode (host)", real_load)
    image_files.load_image = images_module.load_image
    import gsam2.core.masks as masks_module

    # SAM 2's deferred masks, made in the encode workers (upsampled crops; device work on a GPU).
    masks_module.finish_masks = wrap_cpu(clock, "encode: finish masks", masks_module.finish_masks)
    import gsam2.core.exports as exports_module  # write_image_outputs: one image's record, JSON and drawing

    exports_module.detections_to_record = wrap_cpu(clock, "encode: RLE + record (host)", exports_module.detections_to_record)
    exports_module.atomic_write_text = wrap_cpu(clock, "write (host)", exports_module.atomic_write_text)
    exports_module.json = JsonClock(clock)
    rss_before = current_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    if case.loop == "engine":
        argv = ["image", "--prompt", PROMPT, "--input", str(workdir / f"images-{case.size}"), "--output", str(output)]
        argv += ["--detector", detector_name, "--segmenter", segmenter_name, "--device", "cpu", "--quiet"]
        argv += ["--box-threshold", "0.3", "--batch-size", str(case.batch_size)] + ([] if case.draw else ["--no-draw"])
        status = cli.main(argv)
        assert status == 0, status
    else:
        seed_loop(files, output, detector_name, segmenter_name, case.draw)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    written = len(list(output.glob("*.json")))
    assert written == len(files), (written, len(files))
    per_image_model = profile["detector"] + profile["encoder"] + profile["decoder"] * -(-objects // 64)
    ceiling = 1 / per_image_model
    measured = len(files) / seconds
    return {
        **asdict(case),
        "images_per_s": measured,
        "ceiling_images_per_s": ceiling,
        "ratio": measured / ceiling,
        "host_cpu_s_per_image": cpu / len(files),
        "host_cpu_s_per_image_by_stage": {k: v / len(files) for k, v in sorted(clock.seconds.items())},
        "peak_rss_mib": peak_rss() / 2**20,
        "rss_growth_mib": (peak_rss() - rss_before) / 2**20,
    }


def current_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_images(workdir: Path, size: str, count: int) -> None:
    """Photo-like JPEGs (smooth gradients and noise) of the case's size, written once."""
    from PIL import Image

    width, height, _ = SIZES[size]
    folder = workdir / f"images-{size}"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    for index in range(count):
        noise = rng.normal(0, 25, (height, width, 3)).astype(np.float32)
        image = np.clip(base * (0.5 + 0.1 * (index % 5)) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{index:04d}.jpg", quality=90)


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--profiles", default="t4,h100")
    parser.add_argument("--sizes", default="1mp,2.5mp")
    parser.add_argument("--draw", action="store_true", help="also measure with drawing")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch's intra-op threads in the measured process (0: default)"
    )
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        case_path, workdir, result_path = args._child.split(",")
        result = run_case(Case(**json.loads(Path(case_path).read_text())), Path(workdir))
        Path(result_path).write_text(json.dumps(result))
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="gsam2-simulated-") as tmp:
        workdir = Path(tmp)
        for size in args.sizes.split(","):
            make_images(workdir, size, args.images)
        for size in args.sizes.split(","):
            for profile in args.profiles.split(","):
                for draw in [False, True] if args.draw else [False]:
                    for loop in ("seed", "engine"):
                        case = Case(profile, size, draw, loop, args.images, args.batch_size, args.torch_threads)
                        case_path = workdir / "case.json"
                        case_path.write_text(json.dumps(asdict(case)))
                        result_path = workdir / "result.json"
                        child = [sys.executable, __file__, "--_child", f"{case_path},{workdir},{result_path}"]
                        subprocess.run(child, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                        result = json.loads(result_path.read_text())
                        results.append(result)
                        print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_result(r: dict) -> None:
    stages = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["host_cpu_s_per_image_by_stage"].items())
    print(
        f"{r['profile']:>5} {r['size']:>5} {'draw' if r['draw'] else 'no-draw':>7} {r['loop']:>6}: "
        f"{r['images_per_s']:5.2f} img/s of {r['ceiling_images_per_s']:5.2f} = {r['ratio']:.2f}; "
        f"host CPU {r['host_cpu_s_per_image'] * 1000:.0f} ms/img ({stages}); "
        f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['rss_growth_mib']:.0f})",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
