"""FiftyOne datasets labelled on a Ray cluster: one operator run, split into shards that Ray workers run.

The driver (a Python session, or the App server when an operator's "Ray
cluster address" is set) checks the run once, creates its fields, and cuts the
target view's sorted sample ids into contiguous ranges, fixed when the run
starts, as the operators' ``num_shards`` does (:func:`~..operators.sharding.shard_ranges`).
Each range goes to a Ray actor, which runs the operator's own ``prepare`` on
it (with ``shard_range`` set, so :func:`~..operators.sharding.shard_of` selects
it): the same per-sample labelling, bulk ``set_values`` writes, mask files and
``<field>_error`` records as a local run, in the workers. A range is also the
unit Ray retries: an actor that dies is restarted and its range redone, which
replaces, never duplicates, what it had written (overwrite replaces the field,
merge replaces this operator's labels, mask files are cleared first).

The workers write into the driver's database: its URI and database name travel
to them as ``FIFTYONE_DATABASE_URI`` / ``FIFTYONE_DATABASE_NAME`` in the
actors' ``runtime_env``, which FiftyOne reads when it is imported
(``FiftyOneConfig`` in fiftyone/core/config.py; ``establish_db_conn`` in
fiftyone/core/odm/database.py connects to ``database_uri`` when it is set and
only otherwise starts a private ``mongod`` of its own).

Example::

    from gsam2.cluster import label_dataset
    from gsam2.core import RunSpec

    spec = RunSpec.build(prompt="car. person.", box_threshold=0.3)
    label_dataset(dataset.match_tags("new"), spec, "gsam2", address="auto")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import GroundedSam2Error, InputError
from ..core.spec import RunSpec

#: The FiftyOne plugin's name (fiftyone.yml): an operator's URI is ``PLUGIN/<operator name>``.
PLUGIN = "@gsam2/grounded-sam2"

#: Operator parameters of a Ray run (``ray_address`` is the form's "Ray cluster address"; empty: not on Ray).
RAY_PARAMS = ("ray_address", "ray_workers", "ray_gpus_per_worker", "ray_shards")

#: Ranges per worker when the caller does not say: small enough to balance uneven images and to retry cheaply.
SHARDS_PER_WORKER = 4


def wants_ray(params: dict[str, Any]) -> bool:
    """Whether this request runs on Ray: an address is given, and it is not already one worker's range.

    Raises :class:`InputError` when background runs (``num_shards``) are asked for too: one or the other.
    """
    if not (params.get("ray_address") or "").strip() or params.get("shard_range") is not None:
        return False
    if params.get("num_shards") not in (None, 1):
        raise InputError("Ray cluster address: runs on Ray are not split into background runs too; set num_shards to 1")
    return True


# ----------------------------------------------------------------- Python entry point


def label_dataset(
    view,
    spec: RunSpec,
    label_field: str,
    *,
    source_field: str | None = None,
    write_mode: str = "overwrite",
    mask_dir: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    shards: int | None = None,
) -> dict[str, Any]:
    """Label a FiftyOne dataset or view on a Ray cluster, with the labels a local run writes; return the summary.

    Images get ``Detections`` with masks in ``label_field`` (``ground_and_segment``;
    with ``spec.caption_task``, ``auto_label`` and its captions in
    ``<label_field>_caption``); videos get tracks in ``frames.<label_field>``
    (``track_video``: from ``spec.prompt``, or from the boxes of the frame
    field ``source_field``). Failures go to ``<label_field>_error`` as in a
    local run. ``mask_dir`` stores masks as PNG files under that folder, which
    must be the same path on every worker (a shared file system).

    ``address``: ``None`` (or ``"local"``) finds a cluster as ``ray.init()``
    does (``RAY_ADDRESS``, then one started on this machine with ``ray start``,
    else a new one on this machine); ``"auto"`` (the one started here with
    ``ray start``), ``"HOST:6379"`` (a head's GCS) or ``"ray://HOST:10001"``
    (Ray Client) join that cluster, and one that does not answer is a one-line
    :class:`InputError` before anything is written. A session already connected
    to Ray (``ray.init()`` in a notebook) keeps its connection, whatever the address. ``workers``: model replicas (default one per GPU of
    the cluster, 1 without GPUs); ``gpus_per_worker``: default 1 where the
    cluster has GPUs (fractions share a GPU); ``shards``: id ranges (default 4
    per worker).

    Returns ``processed``, ``objects``, ``failed_count``, ``failed`` (file and
    reason of each failure) and ``summary``, as the operators do.
    """
    operator, params = operator_params(view, spec, label_field, source_field, write_mode, mask_dir)
    params.update(
        ray_address=address or "default",
        ray_workers=workers,
        ray_gpus_per_worker=gpus_per_worker,
        ray_shards=shards,
    )
    from ..operators import runs

    ctx = operator_context(view, params, operator.uri)
    return runs.drive(operator.prepare(ctx), lambda progress: None)


def operator_params(
    view, spec: RunSpec, label_field: str, source_field: str | None, write_mode: str, mask_dir: str | None
):
    """The operator that does ``spec``'s work on ``view``'s media, and its parameters.

    Raises :class:`InputError` when the operator would not run ``spec`` as given
    (a setting it has no parameter for, such as ``compile``).
    """
    from ..core.backends import parse_detector_spec
    from ..core.prompts import prompt_text
    from ..operators.params import SPEC_PARAMS, spec_from_params

    settings = {name: value for name, value in spec.to_dict().items() if name in SPEC_PARAMS}
    if spec.prompt is not None:
        settings["prompt"] = prompt_text(spec.prompt)
    if settings.get("slice_size") is None:
        settings["slice_size"] = 0  # the operators' "whole images"
    media_type = view._root_dataset.media_type
    if media_type == "video":
        name = "track_video"
        params = dict(settings, mode="field" if source_field else "prompt", source_field=source_field)
        from ..operators.track_video import run_spec

        ran = run_spec(params)
    else:
        if source_field:
            raise InputError(f"source field {source_field!r}: boxes from a field are for video datasets")
        base = {"label_field": label_field, "write_mode": write_mode}
        base.update(mask_storage="files" if mask_dir else "database", mask_dir=mask_dir)
        if spec.caption_task is not None:
            name = "auto_label"
            backend, checkpoint = parse_detector_spec(spec.detector)[:2]
            if backend != "florence2":
                raise InputError(f"detector {spec.detector!r}: auto-labelling captions with Florence-2 only")
            params = dict(settings, **base, checkpoint=checkpoint)
        else:
            name = "ground_and_segment"
            params = dict(settings, **base)
        ran = spec_from_params(operator_for(name).run_params(params) if name == "auto_label" else params)
    params["label_field"] = label_field
    ignored = ignored_by_track_video(params) if name == "track_video" else ()
    changed = [key for key, value in spec.to_dict().items() if key not in ignored and ran.to_dict().get(key) != value]
    if changed:
        raise InputError(f"{name} cannot run this spec as given: it takes no {', '.join(changed)}")
    return operator_for(name), params


def ignored_by_track_video(params: dict[str, Any]) -> tuple[str, ...]:
    """The settings track_video does not read in this mode (see :func:`~..operators.track_video.run_spec`)."""
    from ..core.backends import parse_sam3_tracker_spec
    from ..operators.track_video import SAM3_IGNORES

    if params["mode"] == "field":
        return ("prompt", "detector", "task", "slice_size", "slice_overlap")
    return SAM3_IGNORES if parse_sam3_tracker_spec(params.get("tracker") or "") is not None else ()


def operator_for(name: str):
    """The gsam2 operator called ``name``, as FiftyOne registers it (its ``uri`` is ``PLUGIN/name``)."""
    from ..operators import OPERATOR_CLASSES

    for operator_class in OPERATOR_CLASSES:
        operator = operator_class()
        if operator.config.name == name:
            operator.plugin_name = PLUGIN  # what the plugin loader sets (fiftyone/operators/operator.py: uri)
            return operator
    raise InputError(f"operator {name!r}: not a gsam2 operator")


def operator_context(view, params: dict[str, Any], operator_uri: str):
    """The context an operator runs in for ``params`` on ``view``, built as FiftyOne builds a request's.

    The view travels as its serialized stages (``ExecutionContext.view`` rebuilds
    it with ``fiftyone.server.view.get_view``), so a worker sees the same
    samples as the driver; with no ``view_target``, the target view is that view
    (``ExecutionContext._get_target_collection`` in fiftyone/operators/executor.py).
    """
    from fiftyone.operators.executor import ExecutionContext

    request = {"dataset_name": view._root_dataset.name, "view": view.view()._serialize(), "params": params}
    return ExecutionContext(request_params=request, operator_uri=operator_uri)


# ----------------------------------------------------------------- the driver's side of a run


def label_on_ray(ctx, operator_uri: str, written_to: str, create_fields: Callable[[], Any], what: str = "samples"):
    """An operator's work on a Ray cluster (its ``prepare`` returns this when :func:`wants_ray`).

    Call it after the run's checks. It connects and sizes the pool at once, so
    that an address where no cluster answers, a pool the cluster cannot hold or
    a database the workers cannot reach is the run's one-line error before
    anything is written; then ``create_fields()`` makes the fields the run
    writes (here, once: the workers must not race to create them). Returns the
    work: it yields :class:`~..operators.runs.Progress` as ranges finish and
    returns the run's summary, counted over every range.
    """
    from ..operators.sharding import whole_number

    params = ctx.params
    ray = connect(params.get("ray_address"))
    workers, gpus = worker_resources(ray, params.get("ray_workers"), params.get("ray_gpus_per_worker"))
    shards = whole_number("Ray shards", params.get("ray_shards"), minimum=1, default=workers * SHARDS_PER_WORKER)
    env = database_env(ray)
    worker_class = installed_worker_class()
    create_fields()
    view = ctx.target_view()
    ids = sorted(view.values("id"))
    ranges = whole_batch_ranges(ids, shards, 1 if what == "videos" else params.get("batch_size") or BATCH_ALIGNMENT)
    worker_params = {name: value for name, value in params.items() if name not in RAY_PARAMS and name != "view_target"}
    requests = [
        {
            "dataset_name": ctx.dataset.name,
            "view": view.view()._serialize(),
            "params": dict(worker_params, shard_range=bounds, num_shards=1),
        }
        for bounds in ranges
    ]
    start = lambda: start_workers(ray, worker_class, workers, gpus, env)  # noqa: E731
    return label_ranges(ctx, ray, start, operator_uri, requests, len(ids), written_to, what)


def label_ranges(ctx, ray, start: Callable[[], list], operator_uri: str, requests: list[dict], total: int, written_to: str, what: str):
    """The driver's loop: the actors started, progress as each range's summary comes back, the actors ended
    however it stops (they start here, when the work is run, so work that is never run leaves none behind)."""
    from ..operators import summaries
    from ..operators.runs import Progress

    processed, objects, failed, failed_count, done = 0, 0, [], 0, 0
    yield Progress(0, total, what)
    actors = start()
    try:
        for summary in run_shards(ray, actors, operator_uri, requests):
            processed += summary.get("processed", 0)
            objects += summary.get("objects", 0)
            failed += summary.get("failed", [])
            failed_count += summary.get("failed_count", 0)
            done += summary.get("processed", 0) + summary.get("failed_count", 0)
            yield Progress(done, total, what)
    finally:
        for actor in actors:
            ray.kill(actor)  # frees their GPUs now, not when this process exits
    ctx.dataset.reload()  # the workers added fields (the error field) this process has not seen
    result = summaries.run_summary(processed, objects, failed, written_to, what=what)
    if failed_count > len(failed):  # each range lists at most FAILURES_LISTED failures; the count is all of them
        result["failed_count"] = failed_count
    return result


#: Ranges are cut at multiples of this when the batch size is left to the workers (1 on a CPU, 4 on a GPU).
BATCH_ALIGNMENT = 4


def whole_batch_ranges(ids: list[str], shards: int, batch_size: int) -> list[list[str | None]]:
    """About ``shards`` contiguous ``[low, high)`` ranges of the sorted ``ids`` (``None``: open end), whole batches each.

    The ranges of :func:`~..operators.sharding.shard_ranges`, with every cut at a
    multiple of ``batch_size``: an image is then batched with the same
    neighbours as in a local run over the view in id order, and a batched
    forward pass may round differently from a single one (another kernel), so
    the labels match a local run's to the bit.
    """
    if not ids:
        return [[None, None]]
    per_shard = -(-len(ids) // max(1, min(shards, len(ids))))
    per_shard = -(-per_shard // batch_size) * batch_size  # rounded up to whole batches
    starts = list(range(0, len(ids), per_shard))
    return [[None if k == 0 else ids[start], ids[starts[k + 1]] if k + 1 < len(starts) else None] for k, start in enumerate(starts)]


#: How the CLI's helpers (:mod:`.workers`) name the settings in their errors, and how a FiftyOne user knows them.
SPELLINGS = {"--ray": "Ray cluster address", "--workers": "workers", "--gpus-per-worker": "GPUs per worker"}


def in_our_words(error: InputError) -> InputError:
    """``--workers 0: must be at least 1`` as a FiftyOne user reads it: ``workers 0: must be at least 1``."""
    message = str(error)
    for flag, name in SPELLINGS.items():
        if message.startswith((flag + " ", flag + ":")):
            return InputError(name + message[len(flag) :])
    return error


def connect(address: str | None):
    """Ray, connected to the cluster ``address`` names (:func:`.workers.connect`; ``"default"``/``"local"``:
    the one ``ray.init()`` finds, else a new one on this machine).

    A process already on a cluster stays there (Ray allows one per process): ``auto`` and the defaults
    take it as it is, but a ``HOST:PORT`` that is not its address is refused in one line, rather than
    labelling on another cluster than the one named (an App server keeps the cluster of its first run).
    """
    import sys

    from . import workers

    address = (address or "").strip()
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        connected = sys.modules["ray"].get_runtime_context().gcs_address
        if address not in ("", "default", "local", "auto") and not address.startswith("ray://"):
            if not same_address(address, connected):
                raise InputError(
                    f"Ray cluster address {address}: this process is already connected to the Ray cluster at "
                    f"{connected} (one cluster per process: restart it to use another)"
                )
    try:
        workers.connect(None if address in ("", "default", "local") else address)
    except InputError as error:
        raise in_our_words(error) from None
    import ray

    return ray


def same_address(address: str, connected: str) -> bool:
    """Whether ``HOST:PORT`` is the cluster at ``connected`` (the GCS address Ray reports, ``IP:PORT``).

    Hosts are compared by the address they resolve to; a name of this machine (``localhost``) is the same
    as Ray's own address of this node.
    """
    import socket

    def split(text: str) -> tuple[str, str]:
        host, _, port = text.rpartition(":")
        return host.strip("[]"), port

    def resolve(host: str) -> str:
        try:
            return socket.gethostbyname(host)
        except OSError:
            return host

    (host, port), (their_host, their_port) = split(address), split(connected)
    if port != their_port:
        return False
    ours, theirs = resolve(host), resolve(their_host)
    if ours == theirs:
        return True
    import ray

    this_machine = {"127.0.0.1", resolve(socket.gethostname()), ray.util.get_node_ip_address()}
    return ours.startswith("127.") and theirs in this_machine or theirs.startswith("127.") and ours in this_machine


def worker_resources(ray, workers: Any, gpus_per_worker: Any) -> tuple[int, float]:
    """How many workers and GPUs each (:func:`.workers.pool_size`): one per GPU by default, one without GPUs."""
    from ..operators.sharding import whole_number
    from . import workers as pool

    workers = None if workers is None else whole_number("workers", workers, minimum=1, default=1)
    if gpus_per_worker is not None and (isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float))):
        raise InputError(f"GPUs per worker {gpus_per_worker!r}: must be a number of at least 0 (fractions share a GPU)")
    try:
        return pool.pool_size(workers, gpus_per_worker)
    except InputError as error:
        raise in_our_words(error) from None


def database_env(ray) -> dict[str, str]:
    """The workers' FiftyOne settings: this process's database, by URI and name.

    Without ``FIFTYONE_DATABASE_URI``, FiftyOne runs a ``mongod`` of its own on
    this machine and records its port in ``FIFTYONE_PRIVATE_DATABASE_PORT``
    (``establish_db_conn``, fiftyone/core/odm/database.py), bound to
    127.0.0.1: workers on this machine reach it, workers elsewhere cannot.
    """
    import fiftyone as fo
    import fiftyone.core.odm.database as fod

    fod.get_db_conn()  # connect now, so that the port of FiftyOne's own mongod is known
    uri = fo.config.database_uri
    if uri is None:
        port = os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT")
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if len(nodes) > 1:
            raise InputError(
                "FiftyOne's database is the one it started on this machine, which the cluster's other machines "
                "cannot reach: set FIFTYONE_DATABASE_URI to a MongoDB every machine reaches"
            )
        uri = f"mongodb://127.0.0.1:{port}"
    env = {"FIFTYONE_DATABASE_URI": uri, "FIFTYONE_DATABASE_NAME": fo.config.database_name}
    for name in ("FIFTYONE_DATABASE_VALIDATION", "FIFTYONE_DO_NOT_TRACK", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if name in os.environ:  # the driver's choices about the database and the hub hold for its workers
            env[name] = os.environ[name]
    return env


def start_workers(ray, worker_class: type, workers: int, gpus_per_worker: float, env: dict[str, str]) -> list:
    """``workers`` actors of ``worker_class``, each with its share of a GPU, ``env`` (the database) set.

    ``max_restarts`` / ``max_task_retries``: an actor whose process dies is
    started again and its unfinished ranges resubmitted (Ray's actor fault
    tolerance), so no range is lost.
    """
    from .workers import cpus_per_worker

    remote_class = ray.remote(worker_class)
    # A whole CPU each, or a share on a cluster with fewer CPUs than workers: an actor Ray cannot place
    # would hold its range forever. The actor decodes, labels and writes itself: no task needs a CPU.
    cpus = cpus_per_worker(workers)
    return [
        remote_class.options(
            num_cpus=cpus,
            num_gpus=gpus_per_worker,
            max_restarts=-1,
            max_task_retries=-1,
            runtime_env={"env_vars": env},
        ).remote()
        for _ in range(workers)
    ]


def installed_worker_class() -> type:
    """:class:`ShardWorker` as the installed package ``gsam2`` names it, the name the workers import.

    Ray sends an actor class by reference to its module. FiftyOne loads a
    plugin under a name of its own (``fiftyone.plugins.orgs.gsam2.grounded_sam2...``,
    PLUGIN_MODULE_PREFIX in fiftyone/plugins/context.py), which no worker can import; the workers, like
    this process, need gsam2 installed (``pip install "gsam2[ray]"``).
    """
    import importlib

    try:
        return importlib.import_module("gsam2.cluster.fiftyone_datasets").ShardWorker
    except ImportError:
        raise InputError(
            'Ray cluster address: Ray workers run the installed gsam2 package: pip install "gsam2[ray]" '
            "here and on every machine of the cluster"
        ) from None


def run_shards(ray, actors: list, operator_uri: str, requests: list[dict]) -> Iterator[dict[str, Any]]:
    """Each request's summary, as the ranges finish, on whichever actor is free.

    A user error in a worker (a checkpoint missing on that machine) is raised
    here as itself, one line, not as Ray's wrapped traceback.
    """
    from ray.util import ActorPool

    pool = ActorPool(actors)
    try:
        yield from pool.map_unordered(lambda actor, request: actor.run_shard.remote(operator_uri, request), requests)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, GroundedSam2Error):
            raise error.cause from None
        raise


# ----------------------------------------------------------------- the workers' side


class ShardWorker:
    """A Ray actor that runs an operator on one id range at a time, in the database the driver uses.

    Models load once per worker process: the core caches them by name
    (:mod:`~..core.backends`), so every range after the first reuses them.
    """

    def run_shard(self, operator_uri: str, request: dict[str, Any]) -> dict[str, Any]:
        from ..operators import runs

        operator = operator_for(operator_uri.rsplit("/", 1)[-1])
        from fiftyone.operators.executor import ExecutionContext

        ctx = ExecutionContext(request_params=request, operator_uri=operator_uri)
        prepared = operator.prepare(ctx)
        return prepared if isinstance(prepared, dict) else runs.drive(prepared, lambda progress: None)
