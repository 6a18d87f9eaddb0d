"""Background runs: one request split into shards for workers, and runs whose worker died.

A request with ``num_shards`` > 1 queues that many delegated runs at once
(:func:`queue_shards`), each over a fixed range of sample ids (:func:`shard_of`),
for workers started with ``fiftyone delegated launch``; whether the App can
schedule at all is :func:`delegation_available`. Every run first marks as failed
the runs of its operator that lost their worker (:func:`fail_abandoned_runs`).
"""

from __future__ import annotations

import numbers
from datetime import datetime, timedelta
from typing import Any

import fiftyone as fo

from ..core import InputError


def whole_number(name: str, value: Any, minimum: int, default: int) -> int:
    """``value`` (unset: ``default``) if a whole number of at least ``minimum``; 2.5, NaN, inf and True are not.

    For counts that are not run settings (background runs, Ray workers and shards): the App's number
    field sends a number, and a rounded 2.5 would be a silent surprise.
    """
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} {value!r}: must be a whole number of at least {minimum}")
    return int(value)


def check_num_shards(params: dict[str, Any]) -> int:
    """How many background runs (``num_shards``, unset: 1): a whole number of at least 1, never a rounded 2.5.

    Not a run setting (the spec's parsing would take "2" or 2.0): the App's number field sends a number.
    """
    return whole_number("background runs (num_shards)", params.get("num_shards"), minimum=1, default=1)


def wants_fan_out(params: dict[str, Any]) -> bool:
    """Whether this request asks for background runs over shards (queued at once, not delegated).

    Any ``num_shards`` but 1 counts, read without converting it: an invalid
    one (2.5, NaN, 0) then runs at once, where :func:`~.params.run_settings` refuses it
    in one line, instead of being rounded or raising here.
    """
    return params.get("shard_range") is None and params.get("num_shards") not in (None, 1)


def shard_ranges(view, num_shards: int) -> list[list[str | None]]:
    """``num_shards`` contiguous ``[low, high)`` ranges of the view's sorted sample ids (``None``: open end)."""
    ids = sorted(view.values("id"))
    if not ids:  # nothing to split: the first shard takes the (empty) view, the others an empty range
        return [[None, None]] + [["", ""] for _ in range(num_shards - 1)]
    cuts = [None] + [ids[len(ids) * k // num_shards] for k in range(1, num_shards)] + [None]
    return [[cuts[k], cuts[k + 1]] for k in range(num_shards)]


def shard_of(view, params: dict[str, Any]):
    """This run's slice of ``view`` (all of it when not sharded).

    A shard is a range of sample ids fixed when the shards were queued
    (``shard_range``), not a slice recomputed by each worker: a view that
    depends on the output field ("label what has none yet") shrinks as other
    shards write, and a recomputed slice would skip samples. A sample stays in
    its range whatever the others do, so every sample is processed exactly once.
    """
    bounds = params.get("shard_range")
    if bounds is None:
        return view
    low, high = bounds
    ids = [i for i in sorted(view.values("id")) if (low is None or i >= low) and (high is None or i < high)]
    return view.select(ids, ordered=True)


def queue_shards(ctx, operator_uri: str) -> list[str]:
    """Queue one delegated run per shard of this request, each with its id range fixed now; return their ids."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    num_shards = int(ctx.params["num_shards"])
    service = DelegatedOperationService()
    queued = []
    for shard_index, bounds in enumerate(shard_ranges(ctx.target_view(), num_shards)):
        request = dict(ctx.request_params)
        request["params"] = dict(ctx.params, shard_range=bounds)
        request["delegated"] = True
        shard_ctx = ExecutionContext(request_params=request, operator_uri=operator_uri)
        operation = service.queue_operation(
            operator=operator_uri,
            context=shard_ctx.serialize(),
            delegation_target=ctx.request_params.get("delegation_target"),
            label=f"{operator_uri.split('/')[-1]} shard {shard_index + 1}/{num_shards}",
        )
        queued.append(str(operation.id))
    return queued


def delegation_available() -> bool:
    """Whether open-source FiftyOne's App offers "Schedule".

    ``ExecutionOptions.orchestrator_registration_enabled`` is ``not
    fo.config.allow_legacy_orchestrators`` (fiftyone/operators/executor.py):
    without ``FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS=true`` where the App server
    runs, the App expects registered orchestrators, which only FiftyOne
    Enterprise has, and shows "Schedule - NOT AVAILABLE".
    """
    return bool(fo.config.allow_legacy_orchestrators)


# -------------------------------------------------- abandoned runs

# A running operation with no sign of life (progress, or the monitor's ping) for this long
# lost its worker (kill -9, a lost machine): it will never finish.
ABANDONED_AFTER = timedelta(minutes=30)


def fail_abandoned_runs(ctx, operator_uri: str, now: datetime | None = None) -> list[str]:
    """Mark this operator's delegated runs on this dataset that lost their worker as failed; return their ids.

    FiftyOne leaves such a run "running" forever. Its last sign of life is the
    latest of ``started_at``, ``updated_at`` (the monitor's ping) and
    ``status.updated_at`` (our progress, reported every batch or video).
    """
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionResult, ExecutionRunState

    now = now or datetime.utcnow()
    own = str(getattr(ctx, "_delegated_operation_id", None) or "")
    service = DelegatedOperationService()
    failed = []
    for operation in service.get_running_operations(operator=operator_uri, dataset_name=ctx.dataset.name):
        if str(operation.id) == own:
            continue
        status_time = getattr(operation.status, "updated_at", None) if operation.status is not None else None
        seen = [t for t in (operation.started_at, operation.updated_at, status_time) if t is not None]
        if seen and now - max(seen) > ABANDONED_AFTER:
            minutes = int((now - max(seen)).total_seconds() // 60)
            message = f"the worker stopped without finishing: no progress for {minutes} minutes (marked failed by a later run)"
            service.set_failed(
                operation.id, result=ExecutionResult(error=message), required_state=ExecutionRunState.RUNNING
            )
            failed.append(str(operation.id))
    return failed
