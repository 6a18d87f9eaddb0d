"""Memory per image for each model size: what a batch of N images needs on top of the weights.

For ``--batch-size`` sizing. Each case builds a full-size architecture from the
real config classes with random weights (nothing is downloaded: memory and time
do not depend on the weights), runs one warm-up forward, then measures the peak
memory of one more forward over and above what the process held before it
(the weights, the inputs). Every case runs in its own process.

* Grounding DINO-T (Swin-T + BERT-base, 900 queries) at 800x1333, a 6-phrase prompt.
* SAM 2.1 image encoder + one mask-decoder call for 10 boxes per image, at
  1024x1024, for the Hiera sizes tiny, small, base-plus and large (the SAM 2
  repository's ``sam2.1_hiera_*.yaml`` trunk settings).

On CUDA the figure is ``torch.cuda.max_memory_allocated`` (what PyTorch's
allocator handed out; the CUDA context and cuDNN workspaces come on top); on a
CPU it is the growth of the resident set's high-water mark (Linux
``clear_refs``), which also counts the allocator's slack.

Run::

    python bench/model_memory.py                                   # CPU, fp32 (about 10 min on 2 cores)
    python bench/model_memory.py --device cuda --dtype bfloat16 --batch-sizes 1,4,8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: SAM 2.1 Hiera trunks (sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml): embed dim, heads, blocks per stage,
#: global-attention blocks, window sizes per stage, background size of the windowed position embedding.
HIERA = {
    "tiny": (96, 1, [1, 2, 7, 2], [5, 7, 9], [8, 4, 14, 7], [7, 7]),
    "small": (96, 1, [1, 2, 11, 2], [7, 10, 13], [8, 4, 14, 7], [7, 7]),
    "base-plus": (112, 2, [2, 3, 16, 3], [12, 16, 20], [8, 4, 14, 7], [14, 14]),
    "large": (144, 2, [2, 6, 36, 4], [23, 33, 43], [8, 4, 16, 8], [7, 7]),
}
MODELS = ["grounding-dino-tiny", *(f"sam2.1-{size}" for size in HIERA)]
PROMPT = "car. person. bicycle. dog. traffic light. bus."
BOXES_PER_IMAGE = 10


def build(model: str):
    """The model (random weights) and a function that runs one batch of ``n`` images through it."""
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    if model == "grounding-dino-tiny":
        sys.path.insert(0, str(HERE.parent / "tests"))
        from make_tiny_models import build_tokenizer  # no BERT vocabulary offline; ids stay below 30522

        network = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
        input_ids = build_tokenizer()(PROMPT, return_tensors="pt")["input_ids"]

        def run(n: int, device, dtype):
            pixels = torch.rand(n, 3, 800, 1333, device=device, dtype=dtype)
            ids = input_ids.expand(n, -1).to(device)
            return network(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids))

        return network, run

    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2VisionConfig

    dim, heads, blocks, global_blocks, windows, background = HIERA[model.removeprefix("sam2.1-")]
    dims = [dim * 2**stage for stage in range(4)]
    trunk = Sam2HieraDetConfig(
        hidden_size=dim,
        num_attention_heads=heads,
        blocks_per_stage=blocks,
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[heads * 2**stage for stage in range(4)],
        global_attention_blocks=global_blocks,
        window_size_per_stage=windows,
        window_positional_embedding_background_size=background,
    )
    config = Sam2Config(vision_config=Sam2VisionConfig(backbone_config=trunk, backbone_channel_list=dims[::-1]))
    network = Sam2Model(config).eval()

    def run(n: int, device, dtype):
        features = network.get_image_embeddings(torch.rand(n, 3, 1024, 1024, device=device, dtype=dtype))
        boxes = torch.tensor([[[100.0 + 40 * i, 100.0, 400.0 + 40 * i, 500.0] for i in range(BOXES_PER_IMAGE)]])
        for index in range(n):  # one decoder call per image, as core/segmenter.py makes them
            image = [level[index : index + 1] for level in features]
            network(image_embeddings=image, input_boxes=boxes.to(device, dtype), multimask_output=False)

    return network, run


def measure(model: str, batch: int, device_name: str, dtype_name: str) -> dict:
    import torch

    sys.path.insert(0, str(HERE))
    from image_pipeline import MemoryMeter

    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    network, run = build(model)
    network.to(device, dtype)
    weights = sum(p.numel() * p.element_size() for p in network.parameters())
    with torch.inference_mode():
        run(batch, device, dtype)  # warm-up: lazy initialisation, allocator pools
        meter = MemoryMeter(device)
        meter.start()
        started = time.perf_counter()
        run(batch, device, dtype)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        memory = meter.stop()
    return {
        "model": model,
        "batch": batch,
        "device": device_name,
        "dtype": dtype_name,
        "weights_mib": weights / 2**20,
        "peak_growth_mib": memory["peak_growth_bytes"] / 2**20,
        "per_image_mib": memory["peak_growth_bytes"] / 2**20 / batch,
        "seconds": seconds,
        "memory_method": memory["memory_method"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--_child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        model, batch, result = args._child[0], int(args._child[1]), args._child[3]
        Path(result).write_text(json.dumps(measure(model, batch, args.device, args._child[2])))
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="gsam2-memory-") as tmp:
        for model in args.models.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                result_path = Path(tmp) / "result.json"
                child = [sys.executable, __file__, "--device", args.device]
                child += ["--_child", model, str(batch), args.dtype, str(result_path)]
                subprocess.run(child, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                result = json.loads(result_path.read_text())
                results.append(result)
                print(
                    f"{model:>20} batch {batch}: weights {result['weights_mib']:6.0f} MiB, "
                    f"peak +{result['peak_growth_mib']:7.0f} MiB ({result['per_image_mib']:6.0f} MiB/image), "
                    f"{result['seconds']:6.2f} s ({result['device']}, {result['dtype']})",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
