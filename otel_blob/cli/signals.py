"""SIGINT and SIGTERM as a request to stop.

The first one asks the command to drain its LOGs, flush the exporters and exit with a
status that says it was stopped; a second one while it does that ends the process the
default way (a user who presses Ctrl-C twice means it).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopRequest"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While entered, SIGINT and SIGTERM set :attr:`event` instead of interrupting."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None  # the first signal received
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        self._old = {s: signal.signal(s, self._on_signal) for s in _SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._old.items():
            try:
                signal.signal(s, handler)
            except (ValueError, TypeError):  # pragma: no cover - a handler set from C
                pass

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        self.event.set()
        signal.signal(signum, signal.SIG_DFL)

    @property
    def name(self) -> str:
        """The first signal's name (``SIGINT``); empty if none came."""
        return signal.Signals(self.signum).name if self.signum is not None else ""
