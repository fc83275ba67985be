"""The background writer: queued rows are written in batches behind the caller, without a flush; a full queue
drops the newest and counts it; flush and close wait for what was queued before them; order holds."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from server.metrics import RECORDS_DROPPED
from server.state.writer import BATCH, BackgroundWriter


def _dropped(reason: str) -> float:
    return RECORDS_DROPPED.labels(reason=reason)._value.get()


def test_rows_are_written_in_one_batch_after_the_linger_without_a_flush() -> None:
    batches: list[list[int]] = []
    writer = BackgroundWriter(100, sink=lambda rows: batches.append(list(rows)), linger=0.2)
    try:
        for n in range(10):
            assert writer.add(lambda n=n: n)
        deadline = time.monotonic() + 5
        while not batches and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batches == [list(range(10))], "ten answers in a row are one transaction, not ten"
    finally:
        writer.close()


def test_a_full_batch_wakes_the_writer_at_once() -> None:
    written = threading.Event()
    writer = BackgroundWriter(10 * BATCH, sink=lambda rows: written.set(), linger=60)
    try:
        for n in range(BATCH):
            writer.add(lambda n=n: n)
        assert written.wait(5), "BATCH rows waiting are written without waiting for the linger"
    finally:
        writer.close()


def test_a_full_queue_drops_the_newest_and_counts_it_and_flush_and_close_write_the_rest() -> None:
    gate, rows_seen = threading.Event(), []

    def slow_sink(rows: Sequence[int]) -> None:
        gate.wait(10)
        rows_seen.extend(rows)

    writer = BackgroundWriter(3, sink=slow_sink, linger=0.01)
    writer.add(lambda: 0)
    time.sleep(0.2)  # the writer now holds row 0 in the sink, waiting on the gate
    before = _dropped("full")
    assert [writer.add(lambda n=n: n) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert _dropped("full") == before + 1
    gate.set()
    assert writer.flush(5)
    assert rows_seen == [0, 1, 2, 3]
    last_row_when_the_job_ran: list[int] = []
    writer.add(lambda: 5)
    writer.submit(lambda: last_row_when_the_job_ran.append(rows_seen[-1]))
    writer.close()
    assert last_row_when_the_job_ran == [5], "a row queued before a job is written before the job runs"
    assert writer.add(lambda: 6) is False, "a closed writer refuses (counted as closed)"
