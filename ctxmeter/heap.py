"""The garbage collector of a long-running part: what it scans, so that a collection is no latency spike.

A part starts with tens of thousands of objects that live as long as the process (modules, pydantic
schemas, the model registry, the encodings' tables). CPython's full collections scan every one of
them each time: in a burst of changes that was a pause of 20 to 70 ms in the functions and in the edge,
the worst delays of the whole path. ``freeze_startup`` moves them out of the collector's sight once the
part has started (``gc.freeze``): they are never scanned again. Objects made later (sockets, requests)
are collected as before; a frozen object is still freed by its reference count when it goes.
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """Collect what startup left behind, then freeze what is alive; once per process (a restarted part's
    new objects stay collectable, so nothing it drops later can be held for ever)."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
