"""The pipelined runner: order, per-item failures, bounded read-ahead, and decoding that overlaps the model."""

from __future__ import annotations

import threading
import time

import pytest
from gsam2.core import InputError
from gsam2.core.engine import run_pipelined
from hypothesis import given, settings
from hypothesis import strategies as st


def test_outcomes_come_back_in_input_order_whatever_finishes_first():
    delays = [0.03, 0.0, 0.02, 0.0, 0.01, 0.0, 0.025]

    def load(index):
        time.sleep(delays[index])
        return index * 10

    def encode(index, loaded, result):
        time.sleep(delays[-1 - index])
        return result + 1

    outcomes = list(run_pipelined(range(len(delays)), load, lambda batch: list(batch), encode, batch_size=3))
    assert [o.item for o in outcomes] == list(range(len(delays)))
    assert [o.value for o in outcomes] == [i * 10 + 1 for i in range(len(delays))]


def test_each_failure_is_its_items_own_and_says_where():
    def load(index):
        if index == 1:
            raise InputError("image1.png: no such file")
        return index

    def infer(batch):
        if 4 in batch:
            raise RuntimeError("CUDA error on this image")
        return [value * 2 for value in batch]

    def encode(index, loaded, result):
        if index == 6:
            raise InputError("cannot draw a 1x1 image")
        return result

    outcomes = list(run_pipelined(range(8), load, infer, encode, batch_size=4))
    failed = {o.item: (o.stage, o.error) for o in outcomes if o.error}
    assert failed == {
        1: ("load", "image1.png: no such file"),
        4: ("infer", "RuntimeError: CUDA error on this image"),
        6: ("encode", "cannot draw a 1x1 image"),
    }
    assert {o.item: o.value for o in outcomes if not o.error} == {0: 0, 2: 4, 3: 6, 5: 10, 7: 14}


def test_batches_are_made_by_position_and_a_load_failure_leaves_its_batch_smaller():
    """Input 1 fails to load: its batch is [0, 2, 3], and 4 does not take its place. So a run cut into parts of
    whole batches (a Ray actor's chunk) batches every input with the same others as one run over all."""
    seen = []

    def load(index):
        if index == 1:
            raise InputError("image1.png: not an image")
        return index

    def infer(batch):
        seen.append(list(batch))
        return batch

    list(run_pipelined(range(9), load, infer, batch_size=4))
    assert seen == [[0, 2, 3], [4, 5, 6, 7], [8]]
    parts = []
    for start in (0, 4, 8):  # the same inputs in chunks of one batch, as the Ray actors get them
        seen.clear()
        list(run_pipelined(range(start, min(start + 4, 9)), load, infer, batch_size=4))
        parts += seen
    assert parts == [[0, 2, 3], [4, 5, 6, 7], [8]]


def test_an_unexpected_error_stops_the_run_as_a_plain_loop_would():
    def encode(index, loaded, result):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        list(run_pipelined(range(4), lambda i: i, lambda batch: list(batch), encode))


def test_a_stop_during_inference_still_hands_back_what_finished_before():
    class Stopped(BaseException):
        pass

    def infer(batch):
        if 4 in batch:
            raise Stopped
        return list(batch)

    handed_back = []
    with pytest.raises(Stopped):
        for outcome in run_pipelined(range(12), lambda i: i, infer, lambda i, loaded, r: r, batch_size=4):
            handed_back.append(outcome.item)
    assert handed_back == [0, 1, 2, 3], "the first batch is finished and written; nothing after the stop"


def test_read_ahead_is_bounded_by_the_window_not_the_input():
    loaded, consumed = [], 0

    def load(index):
        loaded.append(index)
        return index

    for outcome in run_pipelined(range(1000), load, lambda batch: list(batch), batch_size=4, prefetch=8):
        consumed += 1
        time.sleep(0.001)
        assert len(loaded) - consumed <= 8 + 4 + 8, "loaded ahead: at most the read-ahead, a batch and the encodes"
    assert consumed == 1000


def test_the_next_batch_is_decoded_while_the_model_runs():
    loaded_at, inferred = {}, []

    def load(index):
        time.sleep(0.005)
        loaded_at[index] = time.monotonic()
        return index

    def infer(batch):
        started = time.monotonic()
        time.sleep(0.15)  # the accelerator's time: a CUDA wait releases the GIL like this sleep
        inferred.append((started, time.monotonic(), list(batch)))
        return list(batch)

    list(run_pipelined(range(8), load, infer, batch_size=4, decode_workers=2))
    (first_start, first_end, first), (second_start, _, second) = inferred
    assert first == [0, 1, 2, 3] and second == [4, 5, 6, 7]
    assert all(loaded_at[i] < first_end for i in second), "batch 2 was decoded during batch 1's model time"


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.sampled_from(["ok", "load", "infer", "encode"]), max_size=25),
    st.integers(min_value=1, max_value=6),
)
def test_every_item_has_exactly_one_outcome(kinds, batch_size):
    def load(index):
        if kinds[index] == "load":
            raise InputError(f"{index}: unreadable")
        return index

    def infer(batch):
        if any(kinds[i] == "infer" for i in batch):
            raise ValueError("bad")
        return list(batch)

    def encode(index, loaded, result):
        if kinds[index] == "encode":
            raise InputError("cannot encode")
        return result

    outcomes = list(run_pipelined(range(len(kinds)), load, infer, encode, batch_size=batch_size))
    assert [o.item for o in outcomes] == list(range(len(kinds)))
    assert [o.stage or "ok" for o in outcomes] == kinds
    assert threading.active_count() < 50, "the worker threads end with the run"


def test_the_next_batch_is_prepared_while_the_model_runs_and_a_failed_preparation_falls_back():
    prepared_at, calls = {}, []

    def prepare(batch):
        if 9 in batch:
            raise ValueError("cannot resize image 9")
        prepared_at[tuple(batch)] = time.monotonic()
        return [value * 100 for value in batch]

    def infer(batch, prepared):
        started = time.monotonic()
        time.sleep(0.1)
        calls.append((started, time.monotonic(), list(batch), prepared))
        if 9 in batch:
            raise RuntimeError("image 9 fails on its own")
        return prepared if prepared is not None else [value * 100 for value in batch]

    outcomes = list(run_pipelined(range(12), lambda i: i, infer, batch_size=4, prepare=prepare))
    assert [o.value for o in outcomes if o.error is None] == [i * 100 for i in range(12) if i != 9]
    assert [o.item for o in outcomes if o.error] == [9]
    first_end = calls[0][1]
    assert prepared_at[(4, 5, 6, 7)] < first_end, "batch 2 was prepared during batch 1's model time"
    retried = [prepared for _, _, batch, prepared in calls if len(batch) == 1]
    assert retried and all(p is None for p in retried), "a retried item prepares for itself"


def test_preparation_steps_run_in_order_and_the_model_starts_on_the_first_before_the_second_is_done():
    events, threads = [], set()

    def detector_inputs(batch):
        threads.add(threading.current_thread().name)
        events.append(("detector inputs", tuple(batch), time.monotonic()))
        return [value * 10 for value in batch]

    def segmenter_inputs(batch):
        threads.add(threading.current_thread().name)
        time.sleep(0.05)
        if 9 in batch:
            raise ValueError("cannot resize image 9")
        events.append(("segmenter inputs", tuple(batch), time.monotonic()))
        return [value * 100 for value in batch]

    def infer(batch, prepared):
        if prepared is None:  # retried item by item: prepares for itself
            return [(value * 10, value * 100) for value in batch]
        first, second = prepared
        started = time.monotonic()
        detected = first.result()
        events.append(("detector ran", tuple(batch), started))
        segmented = second.result()  # raises for the batch with image 9
        return list(zip(detected, segmented, strict=True))

    outcomes = list(
        run_pipelined(range(12), lambda i: i, infer, batch_size=4, prepare=[detector_inputs, segmenter_inputs])
    )
    assert [o.value for o in outcomes] == [(i * 10, i * 100) for i in range(12)], "image 9's batch was retried"
    assert len(threads) == 1, "the steps share one thread"
    first_batch = (0, 1, 2, 3)
    times = {(name, batch): at for name, batch, at in events}
    assert times[("detector ran", first_batch)] < times[("segmenter inputs", first_batch)], (
        "the model started on the detector's inputs while SAM 2's were still being made"
    )


def test_read_ahead_keeps_order_bounds_the_buffer_and_raises_where_the_source_failed():
    from gsam2.core.engine import read_ahead

    produced = []

    def frames():
        for index in range(50):
            produced.append(index)
            yield index
        raise InputError("decoding failed at frame 50")

    seen = []
    with pytest.raises(InputError, match="frame 50"):
        for frame in read_ahead(frames(), depth=4):
            seen.append(frame)
            time.sleep(0.001)
            assert len(produced) - len(seen) <= 4 + 2, "at most the buffer (and one in hand) ahead"
    assert seen == list(range(50))


def test_read_ahead_stops_its_thread_when_the_consumer_stops_early():
    from gsam2.core.engine import read_ahead

    produced = []

    def endless():
        index = 0
        while True:
            produced.append(index)
            yield index
            index += 1

    reader = read_ahead(endless(), depth=3)
    assert [next(reader) for _ in range(5)] == [0, 1, 2, 3, 4]
    reader.close()
    time.sleep(0.3)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 5 + 3 + 2, "the producer stopped"


def test_reuse_freed_buffers_is_set_on_glibc_linux():
    import platform
    import sys

    from gsam2.core.engine import reuse_freed_buffers

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert reuse_freed_buffers() is glibc


def test_write_behind_runs_jobs_in_order_in_one_thread_and_bounded():
    import threading
    import time

    from gsam2.core.engine import WriteBehind

    done, threads, release = [], set(), threading.Event()

    def job(index):
        release.wait(5)
        threads.add(threading.current_thread().name)
        done.append(index)

    with WriteBehind(depth=3) as writes:
        for index in range(3):
            writes.submit(job, index)  # nothing has finished: the caller is not held up yet
        assert done == []
        releaser = threading.Timer(0.2, release.set)
        releaser.start()
        started = time.perf_counter()
        writes.submit(job, 3)  # a fourth job waits for the oldest: memory stays bounded
        assert time.perf_counter() - started >= 0.15 and done[:1] == [0]
        for index in range(4, 20):
            writes.submit(job, index)
    assert done == list(range(20)), "every job, in order"
    assert len(threads) == 1 and threads.pop().startswith("gsam2-write")


def test_write_behind_raises_a_jobs_error_and_finishes_the_others_when_stopped():
    from gsam2.core.engine import WriteBehind

    def fail():
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with WriteBehind() as writes:
            writes.submit(fail)
            writes.submit(lambda: None)

    done = []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind() as writes:
            for index in range(5):
                writes.submit(done.append, index)
            raise KeyboardInterrupt  # Ctrl-C in the tracking loop: what was handed over is written
    assert done == [0, 1, 2, 3, 4]
