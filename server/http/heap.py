"""The start-up heap out of the garbage collector's reach.

A loaded server holds about half a million tracked Python objects that live as long as the process (the
model's modules, the store's client, the settings, the routes). CPython's full collection walks every one
of them, about half a second on two busy cores, and whichever request triggers it waits that long: at one
connection one cache hit in twenty took 100-450 ms instead of under one. `gc.freeze()` moves what exists
at start-up into a permanent generation the collector never walks; what requests create afterwards is
collected as before. Only the server process's own app does it (`create_app(freeze_heap=True)`, used by
`ragkb serve`), and it thaws the heap at shutdown, so an app started and stopped inside another process (a
test, a tool) leaves nothing pinned.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("ragkb.heap")


def freeze_start_up_heap() -> int:
    """Collect once, then freeze every object that survived; returns how many are frozen."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen", extra={"objects": frozen, "ms": round((time.perf_counter() - started) * 1000, 1)})
    return frozen


def thaw_heap() -> None:
    """Give the frozen objects back to the collector (at shutdown: what the app held can then be freed)."""
    gc.unfreeze()
