"""Garbage-collector settings for a long-running server process.

CPython's cyclic collector stops the whole process while it runs, and a full
(generation 2) collection walks every tracked object: with thousands of
sockets that is hundreds of milliseconds during which no client gets
anything. Two changes keep it away from the delivery path:

- `gc.freeze()` once start-up is done: the modules, the app, the seeded
  directory's leftovers move to a permanent generation no collection walks.
- Thresholds sized by pause, not by frequency: a young collection every
  `thresholds[0]` net allocations (10,000, not 700) and a generation-1
  collection every `thresholds[1]` (5) of those, so no collection below a
  full one walks more than ~50,000 objects (~1 µs each: under 50 ms), while
  full collections, which walk every live object, wait for 100 of those
  (5 million net allocations). Measured at 10,000 sockets (README): with
  `50000,20,100` a generation-1 collection during the connect ramp walked a
  million objects and paused 0.4–1.5 s; with `10000,5,100` the longest pause
  of the whole run was 32 ms.

Both are process-wide, so `GCTuning.restore()` puts the previous state back
(tests start many apps in one process).
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


class GCTuning:
    """Applies collector thresholds and freezes what start-up allocated.

    :param thresholds: `gc.set_threshold` values (generation 0, 1, 2); None
        leaves Python's own (700, 10, 10).
    :param freeze: collect once, then `gc.freeze()` everything alive.
    """

    def __init__(self, thresholds: tuple[int, int, int] | None, *, freeze: bool) -> None:
        self.thresholds = thresholds
        self.freeze = freeze
        self._previous: tuple[int, int, int] | None = None
        self.frozen = 0

    def apply(self) -> None:
        """Call once start-up (store open, directory seeded, tasks started) is done."""
        self._previous = gc.get_threshold()
        if self.thresholds is not None:
            gc.set_threshold(*self.thresholds)
        if self.freeze:
            gc.collect()
            gc.freeze()
            self.frozen = gc.get_freeze_count()
        log.info(
            "garbage collector: thresholds %s, %d start-up objects frozen",
            gc.get_threshold(),
            self.frozen,
        )

    def restore(self) -> None:
        """Undo `apply` (unfreeze, the previous thresholds)."""
        if self.freeze:
            gc.unfreeze()
        if self._previous is not None:
            gc.set_threshold(*self._previous)
            self._previous = None
