"""``gsam2 image|autolabel|video --ray`` on a real Ray cluster: the same files as a local run, nothing lost
when a worker or the driver dies, ``--resume``, and a one-line error for every bad option.

The cluster is the session's (:mod:`tests.ray_cluster`); local and Ray runs use the tiny models.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from gsam2.cli.main import main

from .conftest import REPO_ROOT, shapes_image
from .media import moving_squares, write_video
from .ray_cluster import ray_address  # noqa: F401 - the session's cluster
from .test_cli import gsam2, model_args

EXAMPLES = REPO_ROOT / "examples" / "images"


def files_of(folder: Path) -> dict[str, bytes]:
    """Every result file of a run (not the hidden temporary files a killed writer may leave) and its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.startswith(".")
    }


def assert_same_files(ours: Path, reference: Path) -> None:
    """Byte-identical JSON / JSONL; drawings compared pixel by pixel (and, being the same encoder, byte by byte)."""
    got, want = files_of(ours), files_of(reference)
    assert sorted(got) == sorted(want)
    for name, data in want.items():
        if name.endswith(".jpg"):
            import numpy as np

            with Image.open(ours / name) as a, Image.open(reference / name) as b:
                assert np.array_equal(np.asarray(a), np.asarray(b)), name
        assert got[name] == data, name


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """The shipped examples, two generated images and a file that is not an image (that input's failure)."""
    folder = tmp_path_factory.mktemp("ray-images")
    for example in EXAMPLES.glob("*.jpg"):
        (folder / example.name).write_bytes(example.read_bytes())
    for index in range(2):
        Image.fromarray(shapes_image(90, 120, seed=index)).save(folder / f"shapes{index}.png")
    (folder / "broken.png").write_text("not an image")
    return folder


def image_args(tiny_models, images: Path, output: Path, *extra: str) -> list[str]:
    return ["image", "--prompt", "cat. person. square.", "--input", str(images), "--output", str(output),
            "--box-threshold", "0.2", "--text-threshold", "0", "--quiet", *model_args(tiny_models), *extra]


@pytest.fixture(scope="module")
def local_images(tmp_path_factory, tiny_models, images) -> Path:
    """The reference: the same run on this machine, without Ray."""
    output = tmp_path_factory.mktemp("local-images")
    assert main(image_args(tiny_models, images, output)) == 1  # broken.png is a failure
    return output


def test_image_on_ray_writes_the_same_files_as_a_local_run(tmp_path, tiny_models, images, local_images, ray_address,
                                                           capsys):
    status = main(image_args(tiny_models, images, tmp_path, "--ray", ray_address))
    out, err = capsys.readouterr()
    assert status == 1, err  # the broken input, and only it
    assert "images processed: 5" in out and "failures:         1" in out
    assert f"failed: {images / 'broken.png'}: " in out
    assert_same_files(tmp_path, local_images)


def test_batches_of_two_on_ray_are_a_local_runs_batches(tmp_path, tiny_models, images, ray_address, capsys):
    """``--batch-size 2`` over 6 inputs, one of which (broken.png) cannot be read: each actor call is one chunk
    of 2 consecutive inputs, batched by position as a local run batches them, so the files are the same."""
    assert main(image_args(tiny_models, images, tmp_path / "local", "--batch-size", "2")) == 1
    status = main(image_args(tiny_models, images, tmp_path / "ray", "--batch-size", "2", "--ray", ray_address,
                             "--workers", "2"))
    out, err = capsys.readouterr()
    assert status == 1, err
    assert out.count("images processed: 5") == 2
    assert_same_files(tmp_path / "ray", tmp_path / "local")


def test_actor_calls_get_whole_batches_in_input_order():
    """Each actor call is one chunk of consecutive inputs, whole batches of the run's size, so the actors'
    batches are a local run's (test_engine: batches are made by position within each chunk)."""
    from gsam2.cluster.images import whole_batch_chunks

    assert whole_batch_chunks(range(9), 2) == [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    assert whole_batch_chunks([3, 4, 7, 9, 10], 4) == [[3, 4, 7, 9], [10]]  # --resume: the inputs left
    assert whole_batch_chunks(range(6), None) == [[0, 1, 2, 3], [4, 5]]  # 4 on a GPU, 4 x 1 on a CPU


def test_an_actors_calls_start_in_turn_each_once_the_previous_has_the_accelerator():
    """Calls of one actor (its ``max_concurrency`` threads) start their host work in turn: the second while the
    first holds the model lock (not after the first ends: that would lose the overlap), the third only once the
    second ended without taking the lock (all its inputs failed to load), the fourth once the third failed."""
    import threading

    from gsam2.cluster.images import CallsInTurn

    model_lock = threading.Lock()
    turns = CallsInTurn(model_lock)
    events: list[str] = []
    record = threading.Lock()
    b_started = threading.Event()
    seen: dict[str, bool] = {}

    def log(event: str) -> None:
        with record:
            events.append(event)

    def call(name: str) -> None:
        try:
            with turns.turn() as accelerator:
                log(f"{name} starts")
                if name == "a":
                    with accelerator:
                        seen["b started while a held the lock"] = b_started.wait(timeout=5)
                        log("a leaves the accelerator")
                elif name == "b":  # every input failed to load: never takes the lock
                    seen["lock held when b started"] = model_lock.locked()
                    b_started.set()
                    time.sleep(0.05)
                    log("b ends")
                elif name == "c":
                    time.sleep(0.05)
                    log("c fails")
                    raise RuntimeError("c")
                else:
                    with accelerator:
                        log("d on the accelerator")
        except RuntimeError:
            pass

    threads = []
    for name in "abcd":  # each registers its turn before the next thread starts: arrival order a, b, c, d
        registered = turns._previous
        threads.append(threading.Thread(target=call, args=(name,), daemon=True))  # daemon: a failure never hangs
        threads[-1].start()
        deadline = time.monotonic() + 5
        while turns._previous is registered and time.monotonic() < deadline:
            time.sleep(0.001)
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), events
    assert seen == {"b started while a held the lock": True, "lock held when b started": True}
    assert events.index("a starts") < events.index("b starts") < events.index("a leaves the accelerator")
    assert events.index("b ends") < events.index("c starts")
    assert events.index("c fails") < events.index("d starts") < events.index("d on the accelerator")
    assert not model_lock.locked()


def test_a_write_failure_on_a_worker_is_that_images_failure(tmp_path, tiny_models, images, ray_address, capsys):
    """A folder where one image's JSON goes: that image's line in the summary; the others are written."""
    output = tmp_path / "out"
    (output / "shapes0.json").mkdir(parents=True)
    status = main(image_args(tiny_models, images, output, "--ray", ray_address))
    out, err = capsys.readouterr()
    assert status == 1, err
    assert "images processed: 4" in out and "failures:         2" in out  # broken.png and shapes0.png
    assert f"failed: {images / 'shapes0.png'}: " in out and "cannot write it" in out
    assert (output / "shapes1.json").is_file() and (output / "shapes0.json").is_dir()


def test_a_killed_worker_is_restarted_and_nothing_is_lost_or_written_twice(
    tmp_path, tiny_models, images, local_images, ray_address, monkeypatch, capsys
):
    """A real worker process dies (``os._exit`` in the actor, as an OOM kill would end it) on its first batch.

    Ray Data starts the actor again (``max_restarts=-1``) and retries the batch on it (``max_task_retries=-1``,
    ray/data/_internal/execution/operators/actor_pool_map_operator.py): every input ends with one complete
    result, the same as the local run's.
    """
    marker = tmp_path / "worker-died"
    monkeypatch.setenv("GSAM2_RAY_CRASH_ONCE", str(marker))
    output = tmp_path / "out"
    status = main(image_args(tiny_models, images, output, "--ray", ray_address, "--workers", "1"))
    out, err = capsys.readouterr()
    assert marker.exists(), "no worker died: the test did not test anything"
    assert status == 1, err
    assert "images processed: 5" in out and "failures:         1" in out
    assert_same_files(output, local_images)


def test_resume_after_a_killed_driver_does_the_rest(tmp_path, tiny_models, images, local_images, ray_address):
    """The driver is killed (SIGKILL) in the middle; ``--resume`` keeps the complete results and does the rest."""
    output = tmp_path / "out"
    command = [sys.executable, "-m", "gsam2.cli", *image_args(tiny_models, images, output, "--ray", ray_address,
                                                              "--workers", "1")]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None and not list(output.glob("*.jpg")):
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)
    done_at_kill = {path.stem for path in output.glob("*.jpg")}
    assert done_at_kill, "the driver was killed before any result: nothing to resume from"
    # One of ours cut short (a copy interrupted, say) is redone, not refused as someone else's file.
    (output / "cat.json").write_bytes((local_images / "cat.json").read_bytes()[:40])

    result = gsam2(*image_args(tiny_models, images, output, "--ray", ray_address, "--resume"))
    assert result.returncode == 1, result.stderr  # broken.png, again
    kept = len(done_at_kill - {"cat"})
    assert f"already done:     {kept} (--resume" in result.stdout
    assert f"images processed: {5 - kept}" in result.stdout
    assert_same_files(output, local_images)


def test_resume_without_ray_redoes_only_what_is_incomplete(tmp_path, tiny_models, images, local_images, capsys):
    output = tmp_path / "out"
    output.mkdir()
    for name, data in files_of(local_images).items():
        (output / name).write_bytes(data)
    (output / "astronaut.jpg").unlink()  # a drawing missing: its image is redone
    (output / "coffee.json").write_bytes((local_images / "cat.json").read_bytes())  # another image's record
    cut = (local_images / "shapes0.jpg").read_bytes()
    (output / "shapes0.jpg").write_bytes(cut[: len(cut) // 2])  # a drawing cut short
    status = main(image_args(tiny_models, images, output, "--resume"))
    out, _ = capsys.readouterr()
    assert status == 1
    assert "already done:     2 (--resume" in out and "images processed: 3" in out
    assert_same_files(output, local_images)


def test_autolabel_on_ray_writes_the_same_files_as_a_local_run(tmp_path, tiny_models, images, ray_address, capsys):
    args = ["autolabel", "--input", str(images / "shapes0.png"), str(images / "shapes1.png"), "--caption", "caption",
            "--detector", f"florence2:{tiny_models['florence2']}", "--segmenter", str(tiny_models["sam2"]),
            "--device", "cpu", "--quiet"]
    assert main([*args, "--output", str(tmp_path / "local")]) == 0
    # Two workers on the 2-CPU cluster (one CPU each), the drawings too.
    assert main([*args, "--output", str(tmp_path / "ray"), "--ray", ray_address, "--workers", "2"]) == 0
    out, _ = capsys.readouterr()
    assert "images processed: 2" in out
    assert all("caption" in json.loads(p.read_text()) for p in (tmp_path / "ray").glob("*.json"))
    assert_same_files(tmp_path / "ray", tmp_path / "local")


def video_args(tiny_models, *extra: str) -> list[str]:
    return ["video", "--prompt", "red square. car.", "--box-threshold", "0.9", "--text-threshold", "0", "--step",
            "3", "--quiet", "--detector", str(tiny_models["grounding-dino"]), "--segmenter", str(tiny_models["sam2"]),
            "--tracker", str(tiny_models["sam2-video"]), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-videos")
    write_video(folder / "a.mp4", moving_squares(6, 48, 64))
    write_video(folder / "b.mkv", moving_squares(5, 48, 64), codec="ffv1", pix_fmt="bgr0")
    (folder / "c.mp4").write_text("not a video")  # that video's failure, not the run's
    return folder


def test_videos_on_ray_write_the_same_files_as_local_runs(tmp_path, tiny_models, videos, ray_address, capsys,
                                                          monkeypatch):
    # One video at a time, as gsam2 video has always run: the reference names and bytes.
    for video in ("a.mp4", "b.mkv"):
        assert main(video_args(tiny_models, "--input", str(videos / video), "--output", str(tmp_path / "one"))) == 0
    assert main(video_args(tiny_models, "--input", str(videos), "--output", str(tmp_path / "local"))) == 1
    # A worker process dies on its first video (os._exit, as an OOM kill): Ray starts it again and the video
    # is tracked again from its first frame; its files are one run's, the same bytes as a local run's.
    marker = tmp_path / "worker-died"
    monkeypatch.setenv("GSAM2_RAY_CRASH_ONCE", str(marker))
    status = main(video_args(tiny_models, "--input", str(videos), "--output", str(tmp_path / "ray"),
                             "--ray", ray_address, "--workers", "2"))
    monkeypatch.delenv("GSAM2_RAY_CRASH_ONCE")
    out, err = capsys.readouterr()
    assert marker.exists(), "no worker died: the test did not test anything"
    assert status == 1, err
    assert out.count("videos processed: 2") == 2 and out.count("failures:         1") == 2
    assert f"failed: {videos / 'c.mp4'}" in out
    assert sorted(files_of(tmp_path / "one")) == ["a.jsonl", "a.mp4", "b.jsonl", "b.mp4"]
    assert_same_files(tmp_path / "local", tmp_path / "one")
    assert_same_files(tmp_path / "ray", tmp_path / "one")

    # --resume: a video whose lines stop short is tracked again; the complete one is kept.
    lines = (tmp_path / "ray" / "b.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "ray" / "b.jsonl").write_text("".join(lines[:2]))
    status = main(video_args(tiny_models, "--input", str(videos / "a.mp4"), str(videos / "b.mkv"), "--output",
                             str(tmp_path / "ray"), "--ray", ray_address, "--resume"))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "already done:     1 (--resume" in out and "videos processed: 1" in out
    assert_same_files(tmp_path / "ray", tmp_path / "one")


def test_video_formats_on_ray_are_the_same_files_as_local(tmp_path, tiny_models, videos, ray_address, capsys):
    """MOT / MOTS / YouTube-VIS are written by the actor that tracks the video, as a local run writes them."""
    formats = ["--format", "jsonl", "--format", "mot", "--format", "mots", "--format", "ytvis", "--no-draw"]
    inputs = ["--input", str(videos / "a.mp4"), str(videos / "b.mkv")]
    assert main(video_args(tiny_models, *inputs, "--output", str(tmp_path / "local"), *formats)) == 0
    assert main(video_args(tiny_models, *inputs, "--output", str(tmp_path / "ray"), "--ray", ray_address,
                           *formats)) == 0, capsys.readouterr().err
    assert sorted(files_of(tmp_path / "local")) == [
        "a.jsonl", "b.jsonl", "mot/a.txt", "mot/b.txt", "mots/a.txt", "mots/b.txt", "ytvis/a.json", "ytvis/b.json"
    ]
    assert_same_files(tmp_path / "ray", tmp_path / "local")


def test_image_formats_on_ray_are_the_same_files_as_local(tmp_path, tiny_models, images, ray_address, capsys):
    """COCO and YOLO files are assembled on the driver in input order, whatever order the workers finish in."""
    formats = ["--format", "json", "--format", "coco", "--format", "yolo", "--no-draw"]
    assert main(image_args(tiny_models, images, tmp_path / "local", *formats)) == 1  # broken.png: its failure
    status = main(image_args(tiny_models, images, tmp_path / "ray", "--ray", ray_address, "--workers", "2",
                             *formats))
    assert status == 1, capsys.readouterr().err
    local = files_of(tmp_path / "local")
    assert {"annotations.json", "data.yaml"} <= set(local) and any(name.startswith("labels/") for name in local)
    assert_same_files(tmp_path / "ray", tmp_path / "local")


def one_input(folder: Path, command: str) -> Path:
    """A small image (``gsam2 image``) or video (``gsam2 video``) in ``folder``."""
    media = folder / ("a.png" if command == "image" else "a.mp4")
    if command == "image":
        Image.fromarray(shapes_image()).save(media)
    else:
        write_video(media, moving_squares(2, 32, 48))
    return media


@pytest.mark.parametrize(
    ("command", "options", "message"),
    [
        ("image", ["--resume", "--format", "yolo"], "--resume: only --format json results can be resumed, not yolo"),
        ("video", ["--resume", "--format", "mot"], "--resume: only --format jsonl results can be resumed, not mot"),
    ],
)
def test_whole_run_formats_with_ray_or_resume_are_one_line_usage_errors(tmp_path, command, options, message):
    media = one_input(tmp_path, command)
    result = gsam2(command, "--prompt", "car", "--input", str(media), "--output", str(tmp_path / "out"),
                   "--detector", str(tmp_path / "no-model"), *options)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line


def test_videos_sharing_a_stem_get_distinct_names(tmp_path, tiny_models):
    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
        write_video(tmp_path / folder / "clip.mp4", moving_squares(2, 32, 48))
    status = main(video_args(tiny_models, "--input", str(tmp_path / "x"), str(tmp_path / "y"), "--output",
                             str(tmp_path / "out"), "--no-draw"))
    assert status == 0
    assert sorted(files_of(tmp_path / "out")) == ["clip.mp4-2.jsonl", "clip.mp4.jsonl"]  # gsam2 image's rule


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--ray", "127.0.0.1:9"], "--ray 127.0.0.1:9: no Ray cluster answers there"),
        (["--ray", "nowhere"], "--ray nowhere: not a cluster address (HOST:PORT, ray://HOST:PORT or auto)"),
        (["--ray", "--workers", "0"], "--workers 0: must be at least 1"),
        (["--ray", "--gpus-per-worker", "-1"], "--gpus-per-worker -1: must be 0 or more"),
        (["--ray", "--gpus-per-worker", "nan"], "--gpus-per-worker nan: must be 0 or more"),
        (["--workers", "2"], "--workers: only with --ray"),
        (["--gpus-per-worker", "0.5"], "--gpus-per-worker: only with --ray"),
    ],
)
@pytest.mark.parametrize("command", ["image", "video"])
def test_bad_ray_options_are_one_line_usage_errors(tmp_path, command, options, message):
    media = one_input(tmp_path, command)
    started = time.monotonic()
    result = gsam2(command, "--prompt", "car", "--input", str(media), "--output", str(tmp_path / "out"),
                   "--detector", str(tmp_path / "no-model"), *options)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {message}"), line
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()


def test_more_gpus_per_worker_than_the_cluster_has_is_a_usage_error(tmp_path, ray_address, capsys):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    status = main(["image", "--prompt", "car", "--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "o"),
                   "--ray", ray_address, "--gpus-per-worker", "1"])
    assert status == 2
    assert "--gpus-per-worker 1: the cluster has 0 GPUs" in capsys.readouterr().err


def test_the_pool_fits_the_cluster(ray_address, monkeypatch):
    """Default sizes, fractional GPUs, and pools the cluster cannot hold (one line, not a run that waits forever)."""
    from gsam2.cluster import workers
    from gsam2.core.errors import InputError

    cpus = ray_cpus()
    assert workers.pool_size(None, None) == (1, 0.0)  # no GPUs: one replica
    assert workers.cpus_per_worker(1) == min(1.0, cpus)
    assert workers.cpus_per_worker(2 * int(cpus)) == 0.5  # more workers than CPUs: an equal share each
    monkeypatch.setattr(workers, "cluster_gpus", lambda: 4.0)  # the arithmetic of a 4-GPU cluster
    assert workers.pool_size(None, None) == (4, 1.0)
    assert workers.pool_size(None, 0.5) == (8, 0.5)
    assert workers.pool_size(2, 0.25) == (2, 0.25)
    with pytest.raises(InputError, match=r"^--workers 5: 5 x 1 GPUs is more than the cluster's 4 "):
        workers.pool_size(5, 1.0)
    with pytest.raises(InputError, match=r"^--gpus-per-worker 8: the cluster has 4 GPUs$"):
        workers.pool_size(None, 8.0)


def ray_cpus() -> float:
    import ray

    return float(ray.cluster_resources()["CPU"])


def test_ray_not_installed_says_how_to_install_it(tmp_path):
    Image.fromarray(shapes_image()).save(tmp_path / "a.png")
    code = (
        "import sys; sys.modules['ray'] = None\n"  # import ray raises ImportError, as without the extra
        "from gsam2.cli.main import main\n"
        f"sys.exit(main(['image', '--prompt', 'car', '--input', {str(tmp_path / 'a.png')!r}, '--output', "
        f"{str(tmp_path / 'out')!r}, '--ray']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == 'error: --ray: Ray is not installed here: pip install "gsam2[ray]"'
