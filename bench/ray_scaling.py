"""How ``gsam2 image --ray`` scales with the number of model replicas, measured without a GPU.

Each Ray actor's model forwards are the stand-ins of :mod:`simulated_accelerator` (they sleep for a
T4-class or H100-class time, releasing the GIL as a CUDA wait does, and return outputs of the real
shapes); everything else is the real code on the real Ray cluster: ``gsam2 image --ray`` (``cli.main``)
plans the run, Ray Data streams the file names to the actor pool, and each actor
(``gsam2.cluster.images.ImageWorker``) runs the local run's loop on its batches: decoding, the real
processors, box selection and mask prompts, masks, RLE and JSON.

The stand-ins reach the actors through Ray's ``worker_process_setup_hook``: every worker process of the
cluster gets a model cache that builds the simulated detector and segmenter the first time an actor
asks for them by name (``simulated/grounding-dino``, ``simulated/sam2``), as a real actor loads its
checkpoints in ``__init__``. The cluster declares N GPUs (``ray.init(num_gpus=N)``; nothing uses them):
``--ray`` then sizes the pool as it would on a real N-GPU machine, one replica per GPU.

For N actors the ceiling is N x one replica's ceiling (1 / the stand-ins' time per image). Each case runs
in its own process with its own cluster. Reported per case: images/s and its ratio to the ceiling, host
CPU per image (every process of the run: driver, Ray's own daemons and the actors), peak RSS per
actor and of the driver, and where each actor's accelerator time in the window went, averaged over the
actors: ``busy`` in the stand-ins' forwards; idle in the ``fill`` before its first forward, the ``gaps``
between forwards and the ``drain`` after its last one (its last writes, other actors still working). The
single-process engine (``gsam2 image`` without Ray) is measured in the same invocation on the same
images, for the Ray-overhead goal (1 actor against it).

Run (2-core CPU)::

    HF_HUB_OFFLINE=1 python bench/ray_scaling.py --simulated-accelerator
    HF_HUB_OFFLINE=1 python bench/ray_scaling.py --simulated-accelerator --actors 1,4 --profiles t4

Options: ``--images N`` (240), ``--actors 1,2,4,8``, ``--profiles t4,h100``, ``--batch-size`` (4),
``--cpus N`` (logical CPUs the cluster declares besides one per actor; 2), ``--draw`` (the Ray cases draw each
image too, as ``gsam2 image`` does by default; the engine case does not), ``--json FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = str(Path(__file__).resolve().parent)
sys.path.insert(0, BENCH)

import simulated_accelerator as sim  # noqa: E402 - the stand-ins, the images, the engine's own case

SIZE = "1mp"  # 1280 x 800, 10 objects per image

# ---------------------------------------------------------------- inside every Ray worker process


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: stand-in models on demand, one torch thread (as the engine case).

    The model cache of :mod:`gsam2.core.backends` is replaced by one that builds the simulated models when
    a ``simulated/...`` name is first asked for; other names load as usual. Only the actors ask.
    """
    import sys

    import torch

    from gsam2.core import backends as models

    sys.path.insert(0, BENCH)
    import simulated_accelerator as sim

    torch.set_num_threads(1)  # see simulated_accelerator.run_case: the host's share without OpenMP spinning

    class SimulatedModels(dict):
        def __contains__(self, key) -> bool:
            if not dict.__contains__(self, key) and str(key[1]).startswith("simulated/"):
                profile = sim.PROFILES[os.environ["GSAM2_SIM_PROFILE"]]
                objects = sim.SIZES["1mp"][2]
                sim.install_models(profile, objects, sim.StageClock(), Path(os.environ["GSAM2_SIM_WORKDIR"]))
            return dict.__contains__(self, key)

    models._cache = SimulatedModels(models._cache)
    time_stages(Path(os.environ["GSAM2_SIM_WORKDIR"]) / "stage-cpu")


def time_stages(folder: Path) -> None:
    """Each stage's own CPU time (its thread's), summed per process into ``folder/<pid>.json``, and when work ran.

    The stages are the actor's decode (``load_image``) and write (``write_image_outputs``: masks, RLE,
    JSON), found by name in :mod:`gsam2.core.image_files` at each call, so replacing the module's attributes
    here times the real calls. Also kept: when each actor call started (its batch handed over) and when each
    image's write ended, for the steady-state window.
    """
    import threading

    import simulated_accelerator as sim

    from gsam2.cluster import images
    from gsam2.core import image_files

    folder.mkdir(exist_ok=True)
    totals: dict[str, float] = {}
    lock = threading.Lock()
    started: list[float] = []  # wall-clock start of each actor call
    written: list[float] = []  # wall-clock end of each image's write
    busy: list[tuple[float, float]] = []  # each stand-in forward's (start, end): the accelerator's busy time

    def save() -> None:
        record = {"cpu": totals, "started": started, "written": written, "busy": busy}
        (folder / f"{os.getpid()}.json").write_text(json.dumps(record))

    def timed(name, function):
        def call(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    totals[name] = totals.get(name, 0.0) + time.thread_time() - start
                    if name == "write":
                        written.append(time.time())
                    save()

        return call

    def call_started(function):
        def call(self, batch):
            with lock:
                started.append(time.time())
                save()
            return function(self, batch)

        return call

    def on_accelerator(function):
        def call(*args, **kwargs):
            start = time.time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    busy.append((start, time.time()))

        return call

    sim.SimulatedGroundingDino.__call__ = on_accelerator(sim.SimulatedGroundingDino.__call__)
    sim.SimulatedSam2.get_image_embeddings = on_accelerator(sim.SimulatedSam2.get_image_embeddings)
    sim.SimulatedSam2.__call__ = on_accelerator(sim.SimulatedSam2.__call__)
    image_files.load_image = timed("decode", image_files.load_image)
    image_files.write_image_outputs = timed("write", image_files.write_image_outputs)
    images.ImageWorker.__call__ = call_started(images.ImageWorker.__call__)


# ---------------------------------------------------------------- measuring the process tree


class TreeSampler:
    """Samples this process and all its descendants (Ray's daemons and workers) every ``period`` seconds.

    Keeps each process's last CPU time and its peak RSS, and what it is (Ray sets a worker's title to
    ``ray::<what it runs>``): actors are the processes whose title names ``MapWorker``.
    """

    def __init__(self, period: float = 0.5):
        import psutil

        self.psutil, self.period = psutil, period
        self.me = psutil.Process()
        self.cpu: dict[int, float] = {}
        self.base: dict[int, float] = {}
        self.rss: dict[int, int] = {}
        self.title: dict[int, str] = {}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.history: list[tuple[float, dict[str, float]]] = []  # (wall-clock time, CPU seconds by role)
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        """One sample now (the thread samples every ``period``)."""
        with self.lock:
            self._sample()

    def _sample(self) -> None:
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu = times.user + times.system
                    rss = proc.memory_info().rss
                    title = " ".join(proc.cmdline())[:120]  # Ray retitles a worker by what it runs
                    if "MapWorker" not in self.title.get(proc.pid, ""):  # an actor stays one
                        self.title[proc.pid] = title
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                continue
            self.cpu[proc.pid] = cpu
            self.rss[proc.pid] = max(self.rss.get(proc.pid, 0), rss)
        self.history.append((time.time(), self.cpu_by_role()))

    def start(self) -> None:
        self._sample()
        self.base = dict(self.cpu)
        self.rss = {}
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop_event.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()
        self.sample()

    def cpu_seconds(self) -> float:
        return sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.cpu.items())

    def roles_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by role from ``start`` to ``end`` (wall-clock), interpolated between samples."""
        a, b = self._at(start), self._at(end)
        return {role: b.get(role, 0.0) - a.get(role, 0.0) for role in b}

    def cpu_between(self, start: float, end: float) -> float:
        return sum(self.roles_between(start, end).values())

    def _at(self, when: float) -> dict[str, float]:
        before = [h for h in self.history if h[0] <= when] or self.history[:1]
        after = [h for h in self.history if h[0] >= when] or self.history[-1:]
        (t0, r0), (t1, r1) = before[-1], after[0]
        share = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return {role: r0.get(role, 0.0) + share * (r1.get(role, 0.0) - r0.get(role, 0.0)) for role in r1}

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds by what the processes are: the driver, actors, Ray Data's tasks, Ray's daemons."""
        roles: dict[str, float] = {}
        for pid, cpu in self.cpu.items():
            title = self.title.get(pid, "")
            role = (
                "driver" if pid == self.me.pid
                else "actors" if "MapWorker" in title
                else "tasks" if title.startswith("ray::") and ("MapBatches" in title or "IDLE" in title)
                else "raylet" if "raylet" in title
                else "gcs" if "gcs_server" in title
                else "other Ray processes"
            )
            roles[role] = roles.get(role, 0.0) + cpu - self.base.get(pid, 0.0)
        return roles

    def actor_peaks_mib(self) -> list[float]:
        return sorted(
            (rss / 2**20 for pid, rss in self.rss.items() if "MapWorker" in self.title.get(pid, "")), reverse=True
        )

    def driver_peak_mib(self) -> float:
        return self.rss.get(self.me.pid, 0) / 2**20


# ---------------------------------------------------------------- one case (in a fresh process)


def ray_case(profile: str, actors: int, images: int, batch_size: int, cpus: int, workdir: Path,
             draw: bool = False) -> dict:
    """``gsam2 image --ray`` on a fresh local cluster of ``actors`` declared GPUs; its figures."""
    import ray

    from gsam2.cli.main import main
    from gsam2.cluster import images as cluster_images

    import shutil

    os.environ["GSAM2_SIM_PROFILE"], os.environ["GSAM2_SIM_WORKDIR"] = profile, str(workdir)
    shutil.rmtree(workdir / "stage-cpu", ignore_errors=True)  # the previous case's
    sim.write_sam2_processor(workdir)  # once, before the actors read it
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Unix socket paths
    ray.init(
        num_cpus=actors + cpus,  # one per actor (its logical share; the host has what it has) + the tasks'
        num_gpus=actors,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
        runtime_env={
            "worker_process_setup_hook": setup_worker,
            "env_vars": {"GSAM2_SIM_PROFILE": profile, "GSAM2_SIM_WORKDIR": str(workdir), "HF_HUB_OFFLINE": "1"},
        },
    )
    try:
        folder = workdir / f"images-{SIZE}"
        output = workdir / f"out-ray-{profile}-{actors}"
        argv = ["image", "--prompt", sim.PROMPT, "--input", str(folder), "--output", str(output),
                "--detector", "simulated/grounding-dino", "--segmenter", "simulated/sam2", "--device", "cpu",
                "--box-threshold", "0.3", "--batch-size", str(batch_size), "--quiet", "--ray"]
        argv += [] if draw else ["--no-draw"]
        sampler = TreeSampler()
        landed: list[float] = []  # when each result reached the driver
        real = cluster_images.label_files_on_ray

        def timed(*args, **kwargs):
            for result in real(*args, **kwargs):
                landed.append(time.perf_counter())
                yield result

        cluster_images.label_files_on_ray = timed  # cli.image imports it when the run starts
        # The pool starts all its actors (models loaded) before the first batch flows, so that the steady
        # state below is N actors' and not the first actor's while the others still start.
        from ray.data import DataContext

        DataContext.get_current().wait_for_min_actors_s = 600
        warm_up_ray_data()
        sampler.start()
        start = time.perf_counter()
        status = main(argv)
        seconds = time.perf_counter() - start
        sampler.stop()
        assert status == 0, status
        stage_cpu: dict[str, float] = {}
        starts: list[float] = []
        write_ends: list[float] = []
        accelerator: list[list[tuple[float, float]]] = []  # per actor: its forwards' (start, end)
        for path in (workdir / "stage-cpu").glob("*.json"):
            record = json.loads(path.read_text())
            if record.get("busy"):
                accelerator.append(sorted(record["busy"]))
            starts += record["started"]
            write_ends += record["written"]
            for name, value in record["cpu"].items():
                stage_cpu[name] = stage_cpu.get(name, 0.0) + value
        written = len(list(output.glob("*.json")))
        assert written == images, (written, images)
        actor_peaks = sampler.actor_peaks_mib()
        # Steady state: from the first batch handed to an actor to the last image written, every image
        # counted. It leaves out the cluster's start-up (worker processes, imports, model loads: paid once
        # per run, nothing next to a bulk run of hours; shown as "end to end"), and keeps the pipeline's
        # fill (the first batch's decoding and preparation) and drain (actors that finish before others).
        # Timed where the work happens (the actors), not where the driver reads the results (it may read a
        # backlog at once); CPU over the same window from the sampler's history.
        begin, end = min(starts), max(write_ends)
        window = end - begin
        steady = images / window if window > 0 else 0.0
        cpu_window = sampler.cpu_between(begin, end)
        phases = accelerator_phases(accelerator, begin, end)
        roles_window = sampler.roles_between(begin, end)
        total_cpu = sampler.cpu_seconds()
        return {
            "loop": "ray",
            "profile": profile,
            "actors": actors,
            "images": images,
            "seconds": seconds,
            "images_per_s": steady,
            "end_to_end_images_per_s": images / seconds,
            "first_result_s": landed[0] - start,
            "host_cpu_s_per_image": cpu_window / images,
            "host_cpu_s_per_image_end_to_end": total_cpu / images,
            "host_cores_busy": cpu_window / window if window > 0 else 0.0,
            "actor_peak_rss_mib": max(actor_peaks) if actor_peaks else None,
            "actor_processes": len(actor_peaks),
            "driver_peak_rss_mib": sampler.driver_peak_mib(),
            "stage_cpu_s_per_image": {k: v / images for k, v in sorted(stage_cpu.items())},  # whole run
            "accelerator_share_of_window": phases,
            "host_cpu_s_per_image_by_role": {  # steady state, as host_cpu_s_per_image
                k: v / images for k, v in sorted(roles_window.items())
            },
        }
    finally:
        ray.shutdown()


def accelerator_phases(busy_per_actor: list[list[tuple[float, float]]], begin: float, end: float) -> dict:
    """Where each actor's accelerator time in the window went, averaged over the actors that ran a forward.

    Shares of the window: ``busy``, its stand-in forwards (they run under the actor's model lock, so they
    never overlap); ``fill``, idle before its first forward (the first batch's decoding and preparation);
    ``gaps``, idle between forwards (host work between them, or waiting for the next batch); ``drain``,
    idle after its last forward (its last writes, and other actors still working). They add up to 1.
    """
    window = end - begin
    if not busy_per_actor or window <= 0:
        return {}
    shares = {"busy": 0.0, "fill": 0.0, "gaps": 0.0, "drain": 0.0}
    for intervals in busy_per_actor:
        shares["busy"] += sum(b - a for a, b in intervals) / window
        shares["fill"] += (intervals[0][0] - begin) / window
        shares["drain"] += (end - intervals[-1][1]) / window
        shares["gaps"] += sum(max(0.0, a - b) for (_, b), (a, _) in zip(intervals, intervals[1:])) / window
    averages = {name: value / len(busy_per_actor) for name, value in shares.items()}
    averages["first_forward_s"] = sorted(round(intervals[0][0] - begin, 3) for intervals in busy_per_actor)
    return averages


def warm_up_ray_data() -> None:
    """Start Ray Data's own helper actors before the timed run, as a cluster that has run a job has them.

    Ray Data starts three detached actors, one per cluster, the first time a job needs them: its stats
    actor, its autoscaling coordinator and, for actor pools, the actor-location tracker
    (ray/data/_internal/stats.py, cluster_autoscaler/default_autoscaling_coordinator.py,
    execution/node_trackers/actor_location.py, Ray 2.58). Each start-up (a Python process importing Ray
    Data) costs 2-3 s of CPU, and they started in the middle of the first run's data flow: on a fresh
    cluster that is about 25 ms of host CPU per image of a 240-image steady-state window, paid once per
    cluster, not per image. A two-row job on a one-actor pool starts them here.
    """
    import ray
    from ray.data import ActorPoolStrategy

    class Echo:
        def __call__(self, batch):
            return batch

    ray.data.range(2).map_batches(Echo, compute=ActorPoolStrategy(size=1), num_cpus=0).take_all()


def engine_case(profile: str, images: int, batch_size: int, workdir: Path) -> dict:
    """The single-process engine (``gsam2 image``, no Ray) on the same images: simulated_accelerator's own case."""
    case = sim.Case(profile, SIZE, False, "engine", images, batch_size, 1)
    result = sim.run_case(case, workdir)
    return {
        "loop": "engine",
        "profile": profile,
        "actors": 1,
        "images": images,
        "images_per_s": result["images_per_s"],  # end to end: its start-up is the models' (cached: ~0)
        "end_to_end_images_per_s": result["images_per_s"],
        "host_cpu_s_per_image": result["host_cpu_s_per_image"],
        "host_cores_busy": result["host_cpu_s_per_image"] * result["images_per_s"],
        "actor_peak_rss_mib": result["peak_rss_mib"],
        "driver_peak_rss_mib": result["peak_rss_mib"],
    }


def ceiling(profile: str) -> float:
    """One replica's images/s if the host never made it wait (simulated_accelerator's ceiling)."""
    p = sim.PROFILES[profile]
    objects = sim.SIZES[SIZE][2]
    return 1 / (p["detector"] + p["encoder"] + p["decoder"] * -(-objects // 64))


# ---------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulated-accelerator", action="store_true", required=True,
                        help="the only mode: stand-in model forwards (see the module doc)")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--actors", default="1,2,4,8")
    parser.add_argument("--profiles", default="t4,h100")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="logical CPUs the cluster declares besides one per actor")
    parser.add_argument("--draw", action="store_true", help="Ray cases also draw each image (gsam2's default)")
    parser.add_argument("--no-engine", action="store_true", help="skip the single-process engine case")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--_child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        case, result_path = json.loads(args._child), None
        result_path = Path(case.pop("result"))
        workdir = Path(case.pop("workdir"))
        if case["loop"] == "engine":
            result = engine_case(case["profile"], args.images, args.batch_size, workdir)
        else:
            result = ray_case(case["profile"], case["actors"], args.images, args.batch_size, args.cpus, workdir,
                              args.draw)
        result_path.write_text(json.dumps(result))
        return 0

    results = []
    with tempfile.TemporaryDirectory(prefix="gsam2-ray-scaling-") as tmp:
        workdir = Path(tmp)
        sim.make_images(workdir, SIZE, args.images)
        for profile in args.profiles.split(","):
            cases = [] if args.no_engine else [{"loop": "engine", "profile": profile}]
            cases += [{"loop": "ray", "profile": profile, "actors": int(n)} for n in args.actors.split(",")]
            engine = None
            for case in cases:
                result_path = workdir / "result.json"
                child = [sys.executable, __file__, "--simulated-accelerator", "--images", str(args.images),
                         "--batch-size", str(args.batch_size), "--cpus", str(args.cpus),
                         *(["--draw"] if args.draw else []),
                         "--_child", json.dumps({**case, "workdir": str(workdir), "result": str(result_path)})]
                subprocess.run(child, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
                result = json.loads(result_path.read_text())
                n = result["actors"]
                result["ceiling_images_per_s"] = n * ceiling(profile)
                result["ratio"] = result["images_per_s"] / result["ceiling_images_per_s"]
                if result["loop"] == "engine":
                    engine = result
                elif engine is not None and n == 1:
                    result["of_engine"] = result["images_per_s"] / engine["images_per_s"]
                results.append(result)
                print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def print_result(r: dict) -> None:
    extra = f"; {r['of_engine']:.2f} of the engine's" if "of_engine" in r else ""
    if r["loop"] == "ray":
        extra += (f" (end to end {r['end_to_end_images_per_s']:.2f} img/s, first result at "
                  f"{r['first_result_s']:.1f} s)")
    actor = f"{r['actor_peak_rss_mib']:.0f}" if r.get("actor_peak_rss_mib") else "?"
    print(
        f"{r['profile']:>5} {r['loop']:>6} x{r['actors']}: {r['images_per_s']:6.2f} img/s of "
        f"{r['ceiling_images_per_s']:6.2f} = {r['ratio']:.2f}{extra}; host CPU {r['host_cpu_s_per_image'] * 1000:.0f} "
        f"ms/img, {r['host_cores_busy']:.2f} cores busy{roles(r)}{phases(r)}; peak RSS per actor {actor} MiB, "
        f"driver {r['driver_peak_rss_mib']:.0f} MiB",
        flush=True,
    )


def phases(r: dict) -> str:
    shares = r.get("accelerator_share_of_window")
    if not shares:
        return ""
    first = ", ".join(f"{s:.2f}" for s in shares["first_forward_s"])
    return ("; accelerator " + ", ".join(f"{k} {v:.2f}" for k, v in shares.items() if k != "first_forward_s")
            + f" (first forward at {first} s)")


def roles(r: dict) -> str:
    by_role = r.get("host_cpu_s_per_image_by_role")
    if not by_role:
        return ""
    stages = r.get("stage_cpu_s_per_image", {})
    return (" (by process: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in by_role.items()) + "; of which in "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items()) + ")")


if __name__ == "__main__":
    sys.exit(main())
