"""The pieces every Ray job of gsam2 shares: reaching a cluster, sizing the pool, the model-holding worker.

- :func:`require_ray` imports Ray, or says in one line how to install it;
- :func:`connect` joins a cluster (``--ray ADDRESS``, ``auto``) or starts a local one (``--ray``), checking the
  address first so a wrong one is one line, not minutes of Ray's own retries;
- :func:`pool_size` turns ``--workers`` / ``--gpus-per-worker`` into the actor pool (one replica per GPU
  by default, one on a CPU-only cluster) and :func:`worker_options` into ``map_batches`` arguments;
- :class:`RunWorker` is what each actor holds: the :class:`~..core.run.Run` of a
  :class:`~..core.spec.RunSpec` sent as :meth:`~..core.spec.RunSpec.to_dict`, its models loaded once per
  process; its subclasses (:class:`~.images.ImageWorker`, :class:`~.videos.VideoWorker`) run a local run's
  loop on each batch of inputs they are given.

Example (what ``gsam2 image --ray`` and ``gsam2.cluster`` do)::

    ray = require_ray()
    connect(None)                                    # a local cluster; "auto" or "HOST:PORT" for an existing one
    size, gpus = pool_size(workers=None, gpus_per_worker=None)
    dataset.map_batches(MyWorker, fn_constructor_args=(spec.to_dict(), "images"),
                        **worker_options(size, gpus))

Fault tolerance comes from Ray Data: its actor pools are created with ``max_restarts=-1`` and
``max_task_retries=-1`` unless told otherwise (``ActorPoolMapOperator._apply_default_remote_args``,
ray/data/_internal/execution/operators/actor_pool_map_operator.py, Ray 2.58), so an actor whose process dies
is started again (its ``__init__`` loads the models again) and the batch it held is given to the pool again.
Our outputs are written atomically under names planned by the driver, so a batch done twice writes the
same files twice, never a second copy.
"""

from __future__ import annotations

import math
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import GroundedSam2Error, InputError

#: The oldest Ray whose Data API we use as we use it (``map_batches(compute=ActorPoolStrategy(size=N))``,
#: ``fn_constructor_args``, streaming ``iter_rows``); pyproject's ``ray`` extra asks for it.
MINIMUM_RAY = "2.40"

#: Seconds to wait for a cluster's address to answer before saying it does not (Ray itself retries for minutes).
CONNECT_TIMEOUT = 5.0

#: Test hook: the path of a marker file. The first worker to start a batch while the file does not exist
#: creates it and ends its own process (``os._exit``), as a crash or an OOM kill would: the test of
#: "a worker dies and nothing is lost" kills a real Ray worker process, once, at a known point.
CRASH_ONCE_ENV = "GSAM2_RAY_CRASH_ONCE"


def require_ray():
    """Import and return :mod:`ray` (with Ray Data), or raise :class:`InputError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the extra installs ray[data]; plain ray lacks it
    except ImportError:
        raise InputError('--ray: Ray is not installed here: pip install "gsam2[ray]"') from None
    return ray


def check_address(address: str) -> None:
    """Raise :class:`InputError` (one line) unless ``address`` names a Ray cluster that answers.

    ``auto`` is left to Ray (it looks for a cluster started on this machine, at once). ``HOST:PORT`` (a
    head node's GCS, as ``ray start --head`` prints it) and ``ray://HOST:PORT`` (Ray Client) get a TCP
    connection first: ``ray.init`` would retry an address that never answers for minutes.
    """
    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number
        host, port = None, None
    if not host or port is None or parts.scheme not in ("tcp", "ray"):
        raise InputError(f"--ray {address}: not a cluster address (HOST:PORT, ray://HOST:PORT or auto)")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__.replace("Error", " error").lower()
        if isinstance(error, TimeoutError) or isinstance(error, socket.timeout):
            reason = f"no answer in {CONNECT_TIMEOUT:g} s"
        raise InputError(f"--ray {address}: no Ray cluster answers there ({reason})") from None


def connect(address: str | None, **init_options: Any) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``), or start a local one.

    ``None`` starts a cluster on this machine for the run (all its CPUs and GPUs, unless ``init_options`` say
    otherwise, e.g. ``num_cpus=2``) that ends with the process. A process already connected (a test's
    cluster, a notebook's ``ray.init()``) stays on its cluster. Usage statistics are not sent.
    """
    ray = require_ray()
    if ray.is_initialized():
        quiet_ray_data()
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read by ray.init (ray/_private/usage/usage_lib.py)
    if address is not None:
        check_address(address)
    try:
        ray.init(
            address=address,
            log_to_driver=False,  # our workers report through their results, not on the driver's console
            include_dashboard=False if address is None else None,
            configure_logging=False,
            **init_options,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"--ray {address or ''}: cannot connect ({first_line})".replace(" :", ":")) from None
    quiet_ray_data()


def quiet_ray_data() -> None:
    """No Ray Data progress bars or per-stage status lines on the driver: the command prints its own."""
    import logging

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Ray Data's status lines (ray/data/_internal/progress/logging_progress.py) go through these loggers.
    for name in ("ray.data", "ray.data._internal.progress.logging_progress"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cluster_gpus() -> float:
    """GPUs the connected cluster has (all nodes together)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def check_pool_options(workers: int | None, gpus_per_worker: float | None) -> None:
    """One-line errors for a pool that cannot be: fewer than one worker, a negative or NaN GPU share."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if gpus_per_worker is not None and (math.isnan(gpus_per_worker) or gpus_per_worker < 0):
        raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: must be 0 or more (fractions share a GPU)")


def pool_size(workers: int | None, gpus_per_worker: float | None) -> tuple[int, float]:
    """``(actors, GPUs per actor)`` for the connected cluster.

    Defaults: one GPU per actor and one actor per GPU; on a cluster without GPUs, one actor and no GPU
    (a CPU-only model replica already uses every core it gets through torch's threads).
    A GPU share the cluster cannot give even once is refused here, not left for Ray to wait on forever.

    Example: a cluster of 4 GPUs -> ``(4, 1.0)``; ``gpus_per_worker=0.5`` -> ``(8, 0.5)``.
    """
    check_pool_options(workers, gpus_per_worker)
    gpus = cluster_gpus()
    share = gpus_per_worker if gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
    if share > gpus:
        raise InputError(f"--gpus-per-worker {share:g}: the cluster has {gpus:g} GPUs")
    if workers is None:
        workers = max(1, int(gpus // share)) if share > 0 else 1
    elif workers * share > gpus + 1e-9:  # Ray would wait for the missing GPUs forever
        raise InputError(
            f"--workers {workers}: {workers} x {share:g} GPUs is more than the cluster's {gpus:g} "
            "(fewer workers, or a smaller --gpus-per-worker)"
        )
    return workers, share


def cpus_per_worker(workers: int) -> float:
    """The CPUs each actor reserves: 1, or an equal share when the cluster has fewer CPUs than ``workers``.

    Ray schedules by reserved (logical) CPUs, and an actor that cannot get its reservation is never
    started: on a small cluster (a laptop, the tests' 2 CPUs) the actors share what there is. Nothing
    else of a run needs a CPU of its own: each actor decodes, labels and writes its inputs itself. On a
    GPU node an actor mostly waits for its GPU, and the host work it does runs in its own threads.

    Example: 8 CPUs, 4 workers -> 1.0; 2 CPUs, 4 workers -> 0.5.
    """
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return min(1.0, math.floor(cpus / workers * 1000) / 1000)


def worker_options(
    workers: int, gpus_per_worker: float, cpus: float | None = None, overlap: bool = False
) -> dict[str, Any]:
    """``map_batches`` arguments for a fixed pool of ``workers`` model replicas.

    ``compute=ActorPoolStrategy(size=N)`` is Ray Data's fixed pool (``concurrency=N`` in newer spellings);
    ``max_tasks_in_flight_per_actor``: 1 (a video, hours of work, waits on the driver for the first actor
    that frees up, not in the queue of a busy one); with ``overlap``, as many as run at once.
    ``cpus``: each actor's reserved CPUs (default :func:`cpus_per_worker`, fitted to the cluster).

    ``overlap``: three calls run at once in each actor (``max_concurrency=3``), so that the next batches'
    host work (decoding, the processors' resizing) is done while one is on the accelerator; the callable
    must serialise its model work itself (:class:`~.images.ImageWorker`'s calls take a model lock, and start
    their host work in turn: :class:`~.images.CallsInTurn`). Without it an
    actor's accelerator waits for every batch's preparation: measured 0.81 of the ceiling with one
    T4-class actor (bench/ray_scaling.py), against 0.95 for the single-process engine, which prepares
    one batch ahead. Each call is one batch (:mod:`.images`): calls of two batches left an actor's
    accelerator idle for 0.5-1 s now and then. Why three (bench/ray_scaling.py, measured back to back):
    with two, an H100-class actor waited for the driver to hand it each next block (0.72 of the
    single-process engine, against 0.98 with three).
    """
    import inspect

    from ray.data import ActorPoolStrategy

    strategy: dict[str, Any] = {"size": workers, "max_tasks_in_flight_per_actor": 1}
    extra: dict[str, Any] = {}
    if overlap:
        extra["max_concurrency"] = 3
        strategy["max_tasks_in_flight_per_actor"] = 3
        # Ray >= 2.50 runs a UDF one call at a time unless told (before, max_concurrency sufficed).
        if "enable_true_multi_threading" in inspect.signature(ActorPoolStrategy).parameters:
            strategy["enable_true_multi_threading"] = True
    return {
        **extra,
        "compute": ActorPoolStrategy(**strategy),
        "num_gpus": gpus_per_worker or None,
        "num_cpus": cpus_per_worker(workers) if cpus is None else cpus,
    }


def crash_once_if_asked() -> None:
    marker = os.environ.get(CRASH_ONCE_ENV)
    if not marker:
        return
    try:
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return  # a worker has died already: this one works
    os._exit(17)  # a real process death: no exception, no cleanup, Ray sees the actor die


class RunWorker:
    """What one actor holds: a spec's models, loaded once in this process, and the work they do.

    ``spec`` is :meth:`RunSpec.to_dict` (plain JSON: it travels to any node); ``work`` is ``"images"``
    (detect + segment), ``"autolabel"`` (caption, ground, segment) or ``"video"`` (tracking). The models load
    in ``__init__``, so an actor restarted after its process died loads them again before taking a batch.
    Subclasses (the CLI's and FiftyOne's ``map_batches`` callables) define ``__call__``.
    """

    def __init__(self, spec: dict[str, Any], work: str = "images", crash_marker: str | None = None):
        from ..core.engine import freeze_long_lived_objects
        from ..core.run import Run
        from ..core.spec import RunSpec

        if crash_marker:  # the driver hands the test hook on (workers may not share its environment)
            os.environ[CRASH_ONCE_ENV] = crash_marker
        self.work = work
        self.run = Run(RunSpec.from_dict(spec))
        if work == "video":
            self.run.load_for_video()
        else:
            self.run.load_for_images()
        freeze_long_lived_objects()  # an actor lives for the whole run: the collector need not walk its models


def error_line(error: BaseException) -> str:
    """How a worker reports a failure in the summary: our errors as they are, others with their type."""
    if isinstance(error, GroundedSam2Error):
        return str(error)
    return f"{type(error).__name__}: {error}"
