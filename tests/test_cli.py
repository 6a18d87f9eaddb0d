"""``gsam2 image`` end to end with tiny models, run as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from gsam2.cli.inputs import expand_inputs
from gsam2.core.outputs import output_names
from gsam2.core import rle_to_mask

from .conftest import REPO_ROOT, shapes_image

EXAMPLES = REPO_ROOT / "examples" / "images"


def gsam2(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gsam2.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=os.environ.copy(), timeout=300)


def model_args(tiny_models) -> list[str]:
    return [
        "--detector",
        str(tiny_models["grounding-dino"]),
        "--segmenter",
        str(tiny_models["sam2"]),
        "--device",
        "cpu",
    ]


def test_console_script_is_installed():
    script = shutil.which("gsam2") or str(Path(sys.executable).parent / "gsam2")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "image" in result.stdout


def test_help_explains_every_option():
    result = gsam2("image", "--help")
    assert result.returncode == 0
    for option in (
        "--prompt",
        "--input",
        "--output",
        "--detector",
        "--segmenter",
        "--device",
        "--box-threshold",
        "--text-threshold",
        "--batch-size",
        "--recursive",
        "--no-draw",
    ):
        assert option in result.stdout


def test_shipped_examples_end_to_end(tmp_path, tiny_models):
    out = tmp_path / "out"
    result = gsam2(
        "image",
        "--prompt",
        "cat. person. cup.",
        "--input",
        str(EXAMPLES),
        "--output",
        str(out),
        "--box-threshold",
        "0.0",
        "--text-threshold",
        "0.0",
        "--batch-size",
        "2",
        *model_args(tiny_models),
    )
    assert result.returncode == 0, result.stderr
    assert "images processed: 3" in result.stdout and "failures:         0" in result.stdout
    for stem in ("astronaut", "cat", "coffee"):
        record = json.loads((out / f"{stem}.json").read_text())
        with Image.open(EXAMPLES / f"{stem}.jpg") as source:
            width, height = source.size
        assert (record["img_width"], record["img_height"]) == (width, height)
        assert record["box_format"] == "xyxy" and record["annotations"]
        for annotation in record["annotations"]:
            assert annotation["class_name"] in {"cat", "person", "cup"}
            x1, y1, x2, y2 = annotation["bbox"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert rle_to_mask(annotation["segmentation"]).shape == (height, width)
            assert 0.0 <= annotation["score"] <= 1.0
        with Image.open(out / f"{stem}.jpg") as drawn:
            assert drawn.size == (width, height)


def test_bad_inputs_are_reported_and_the_run_goes_on(tmp_path, tiny_models):
    good = tmp_path / "in" / "good.png"
    good.parent.mkdir()
    Image.fromarray(shapes_image()).save(good)
    (tmp_path / "in" / "text.png").write_text("not an image")
    data = good.read_bytes()
    (tmp_path / "in" / "cut.png").write_bytes(data[: len(data) // 3])
    out = tmp_path / "out"
    result = gsam2(
        "image",
        "--prompt",
        "car",
        "--input",
        str(tmp_path / "in"),
        str(tmp_path / "missing.jpg"),
        "--output",
        str(out),
        "--box-threshold",
        "0",
        "--quiet",
        *model_args(tiny_models),
    )
    assert result.returncode == 1
    assert "images processed: 1" in result.stdout
    assert "failures:         3" in result.stdout
    assert "missing.jpg: no such file or folder" in result.stderr
    assert "text.png: not an image" in result.stderr
    assert "cut.png: truncated or corrupt image" in result.stderr
    assert (out / "good.json").exists()
    assert not (out / "text.json").exists() and not (out / "cut.json").exists()


def test_zero_detections_is_a_success(tmp_path, tiny_models):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    result = gsam2(
        "image",
        "--prompt",
        "car",
        "--input",
        str(tmp_path / "a.png"),
        "--output",
        str(tmp_path / "out"),
        "--box-threshold",
        "1.0",
        *model_args(tiny_models),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "a.json").read_text())["annotations"] == []


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (" . ", "is empty"),
        (". ".join(f"thing{i}" for i in range(200)), "prompt is too long"),
        ("!!! ??? ---", "has no letter or digit"),
        ("\u200b", "has no letter or digit"),  # a zero-width space
    ],
)
def test_bad_prompt_is_a_usage_error_before_any_output(tmp_path, tiny_models, prompt, message):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    result = gsam2(
        "image",
        "--prompt",
        prompt,
        "--input",
        str(tmp_path / "a.png"),
        "--output",
        str(tmp_path / "out"),
        *model_args(tiny_models),
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_checkpoint_is_a_usage_error(tmp_path):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    result = gsam2(
        "image",
        "--prompt",
        "car",
        "--input",
        str(tmp_path / "a.png"),
        "--output",
        str(tmp_path / "out"),
        "--detector",
        str(tmp_path / "no-model"),
    )
    assert result.returncode == 2
    assert "detector checkpoint" in result.stderr and "no-model': no such file or folder" in result.stderr


def test_threshold_out_of_range_is_refused():
    result = gsam2("image", "--prompt", "car", "--input", "x", "--output", "y", "--box-threshold", "1.5")
    assert result.returncode == 2 and "not between 0 and 1" in result.stderr


def test_inputs_expand_from_files_folders_and_globs(tmp_path):
    for name in ("a.jpg", "b.PNG", "notes.txt", "sub/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    files, errors = expand_inputs([str(tmp_path), str(tmp_path / "*.jpg"), str(tmp_path / "none-*.png")])
    assert [f.name for f in files] == ["a.jpg", "b.PNG"]  # folder (no recursion), glob deduplicated
    assert errors == [f"{tmp_path / 'none-*.png'}: pattern matched no files"]
    files, _ = expand_inputs([str(tmp_path)], recursive=True)
    assert sorted(f.name for f in files) == ["a.jpg", "b.PNG", "c.png"]


def test_recursive_follows_symlinked_folders_once(tmp_path):
    """``rec/linked -> ../other`` was skipped silently; a loop and a second link to a folder must not repeat files."""
    for name in ("rec/a.png", "rec/sub/b.png", "other/x.png", "other/deeper/y.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "rec" / "linked").symlink_to("../other", target_is_directory=True)
    (tmp_path / "rec" / "sub" / "again").symlink_to("../../other", target_is_directory=True)  # the same real folder
    (tmp_path / "rec" / "sub" / "loop").symlink_to("..", target_is_directory=True)  # back up the tree
    files, errors = expand_inputs([str(tmp_path / "rec")], recursive=True)
    assert errors == []
    real = tmp_path.resolve()
    assert sorted(files) == sorted(
        real / name for name in ("rec/a.png", "rec/sub/b.png", "other/x.png", "other/deeper/y.png")
    )
    files, _ = expand_inputs([str(tmp_path / "rec")])  # without --recursive, sub-folders stay out, linked or not
    assert files == [real / "rec" / "a.png"]


def gsam2_within(seconds: float, *args: str) -> subprocess.CompletedProcess:
    """``gsam2 ARGS`` that must end within ``seconds`` (``subprocess.TimeoutExpired`` if it hangs)."""
    command = [sys.executable, "-m", "gsam2.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=os.environ.copy(), timeout=seconds)


@pytest.mark.parametrize("command", ["image", "autolabel", "video"])
def test_a_fifo_as_input_is_refused_before_any_work(tmp_path, command):
    """Opening a FIFO nobody writes to blocks forever (a hang that ignored SIGTERM): refused at once, one line."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    args = [command, "--input", str(fifo), "--output", str(tmp_path / "out"), "--detector", str(tmp_path / "no-model")]
    result = gsam2_within(120, *args, *([] if command == "autolabel" else ["--prompt", "car"]))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"{fifo}: is a FIFO (named pipe), not a" in line
    assert not (tmp_path / "out").exists()


def test_a_fifo_in_an_input_folder_is_reported_and_the_run_goes_on(tmp_path, tiny_models):
    (tmp_path / "in").mkdir()
    Image.fromarray(shapes_image()).save(tmp_path / "in" / "a.png")
    os.mkfifo(tmp_path / "in" / "pipe.png")
    result = gsam2_within(
        300, "image", "--prompt", "car", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
        "--no-draw", "--quiet", *model_args(tiny_models)
    )
    assert result.returncode == 1, result.stderr
    assert "images processed: 1" in result.stdout and "failures:         1" in result.stdout
    assert f"error: {tmp_path / 'in' / 'pipe.png'}: is a FIFO (named pipe), not an image file; skipped" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.json"]


def test_inputs_of_several_frames_are_named_once_in_the_summary(tmp_path, tiny_models):
    (tmp_path / "in").mkdir()
    first, second = (Image.fromarray(shapes_image(seed=seed)) for seed in (1, 2))
    first.save(tmp_path / "in" / "a.gif", save_all=True, append_images=[second], duration=100, loop=0)
    first.save(tmp_path / "in" / "b.tif", save_all=True, append_images=[second])
    first.save(tmp_path / "in" / "c.png")
    result = gsam2("image", "--prompt", "car", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                   "--no-draw", "--quiet", *model_args(tiny_models))
    assert result.returncode == 0, result.stderr
    real = (tmp_path / "in").resolve()
    line = f"2 inputs had several frames; their first frame was used: {real / 'a.gif'}, {real / 'b.tif'}"
    assert result.stdout.splitlines().count(line) == 1, result.stdout


def test_output_names_are_unique_and_stable():
    # The issue's case: a-2.jpg, a.jpg and a.png once mapped to a-2, a, a-2.
    assert output_names([Path("a-2.jpg"), Path("a.jpg"), Path("a.png")]) == ["a-2", "a.jpg", "a.png"]
    # The same file name in different folders: -2, -3 in input order, never a name another input has.
    names = output_names([Path("x/a.jpg"), Path("y/a.jpg"), Path("b.jpg"), Path("a.jpg-2.png")])
    assert names == ["a.jpg", "a.jpg-3", "b", "a.jpg-2"]
    assert len({n.lower() for n in names}) == len(names)
    assert output_names([Path("A.jpg"), Path("a.png")]) == ["A.jpg", "a.png"], "case-insensitive file systems"


def test_compile_gives_the_same_labels_and_compiles_once_for_a_short_last_batch(tmp_path, tiny_models):
    """``--compile``: SAM 2's image encoder through torch.compile (inductor, on this CPU), padded last batch."""
    import numpy as np

    images = tmp_path / "images"
    images.mkdir()
    for seed in range(5):  # batches of 2, 2 and 1
        Image.fromarray(shapes_image(120, 160, seed=seed)).save(images / f"{seed}.png")
    common = ["image", "--prompt", "car. person.", "--input", str(images), "--box-threshold", "0.0"]
    common += ["--text-threshold", "0.0", "--batch-size", "2", "--no-draw", "--quiet", *model_args(tiny_models)]
    plain = gsam2(*common, "--output", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    command = [sys.executable, "-m", "gsam2.cli", *common, "--output", str(tmp_path / "compiled"), "--compile"]
    env = {**os.environ, "TORCH_LOGS": "recompiles"}  # dynamo logs every recompilation
    compiled = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert compiled.returncode == 0, compiled.stderr
    assert "Recompiling" not in compiled.stderr, "the last, smaller batch is padded, not compiled again"
    for seed in range(5):
        first = json.loads((tmp_path / "plain" / f"{seed}.json").read_text())["annotations"]
        second = json.loads((tmp_path / "compiled" / f"{seed}.json").read_text())["annotations"]
        assert [a["bbox"] for a in first] == [a["bbox"] for a in second], "the detector is not compiled"
        for a, b in zip(first, second, strict=True):
            mask_a, mask_b = rle_to_mask(a["segmentation"]), rle_to_mask(b["segmentation"])
            union = np.logical_or(mask_a, mask_b).sum()
            assert union == 0 or np.logical_and(mask_a, mask_b).sum() / union > 0.99


def test_compile_without_a_sam2_encoder_is_a_usage_error(tmp_path, tiny_models):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    sam3 = ["--detector", f"sam3:{tiny_models['sam3']}", "--device", "cpu"]  # SAM 3 makes its own masks
    result = gsam2("image", "--prompt", "car", "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"),
                   *sam3, "--compile")
    assert result.returncode == 2, result.stderr
    assert "--compile: compiles the image encoder of a transformers SAM 2 checkpoint" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
