"""Step 3 of the data's way: follow a LOG, decode it, deliver its events (no OpenTelemetry).

``listener`` -- the listener interface (no-op defaults), a tee and a logging
reference; ``db_watch`` -- one DB's source -> decoder -> listener; ``loop`` -- the one
background thread serving every watch; ``positions`` -- checkpoints confirmed by
delivery; ``checkpoint`` -- the checkpoint file; ``replay`` -- finished files
through the same path; ``session_start`` -- where a DB session begins in its LOG
files; ``sessions`` -- the session-bound watches of the instrumentation;
``api`` -- :func:`watch`. (Not named ``watch``: ``otel_blob.watch`` is that function.)
"""

from .api import start_watch, watch
from .listener import EventListener, LoggingListener, TeeListener, tee
from .loop import WatchLoop, default_loop
from .stats import WatchStats
from .db_watch import Watch

__all__ = [
    "EventListener",
    "LoggingListener",
    "TeeListener",
    "Watch",
    "WatchLoop",
    "WatchStats",
    "default_loop",
    "start_watch",
    "tee",
    "watch",
]
