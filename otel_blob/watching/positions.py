"""Delivered positions: a watch's checkpoint counts only once what it covers was delivered.

A watch hands its checkpoint to :meth:`Positions.capture` right after it gave
the events of the lines up to there to its listener. For a listener that only
queues them (an exporter), "given" is not "delivered": the checkpoint is held
with the queues' counts at that moment (``marks()``), and becomes *confirmed*
once every queue has delivered that many items (``delivered()``) -- queues
deliver in order, so then every item up to the mark is out. A checkpoint file
(the sidecar CLI) and the helper process's reports to its application save only
confirmed positions: resuming from one neither repeats nor loses an event.

Without queues (``marks`` returns ``()``) a capture is confirmed at once.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Hashable, Sequence

__all__ = ["Positions"]

HELD_MAX = 4096  # captures waiting per key; the oldest are let go (a later one confirms further anyway)


class Positions:
    """Checkpoints per key (a DB path, a LOG path) held until delivered."""

    def __init__(self, marks: Callable[[], Sequence[int]] = tuple,
                 delivered: Callable[[], Sequence[int]] = tuple) -> None:
        self._marks = marks
        self._delivered = delivered
        self._lock = threading.Lock()
        self._held: dict[Hashable, deque[tuple[Sequence[int], dict[str, Any]]]] = {}
        self._confirmed: dict[Hashable, dict[str, Any]] = {}

    def capture(self, key: Hashable, position: dict[str, Any]) -> None:
        """``position`` of ``key``, taken right after its events were handed over."""
        marks = tuple(self._marks())
        with self._lock:
            held = self._held.setdefault(key, deque())
            held.append((marks, position))
            if len(held) > HELD_MAX:
                held.popleft()

    def callback(self, key: Hashable) -> Callable[[dict[str, Any]], None]:
        """An ``on_checkpoint`` for a watch: captures under ``key``."""
        return lambda position: self.capture(key, position)

    def confirm(self) -> dict[Hashable, dict[str, Any]]:
        """Move every held position whose items were all delivered to the confirmed ones;
        returns the keys whose confirmed position changed, with it."""
        done = tuple(self._delivered())
        changed: dict[Hashable, dict[str, Any]] = {}
        with self._lock:
            for key, held in self._held.items():
                last = None
                while held and all(d >= m for d, m in zip(done, held[0][0])):
                    last = held.popleft()[1]
                if last is not None:
                    self._confirmed[key] = changed[key] = last
        return changed

    def confirmed(self, key: Hashable) -> dict[str, Any] | None:
        with self._lock:
            return self._confirmed.get(key)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._held.pop(key, None)
            self._confirmed.pop(key, None)
