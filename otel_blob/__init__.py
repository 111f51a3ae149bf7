"""otel_blob: RocksDB blob file lifecycle as events (and OpenTelemetry).

RocksDB (integrated BlobDB) keeps large values in ``*.blob`` files created by
flushes and compactions and deleted when compaction or blob GC makes them
obsolete. ``otel_blob`` follows the DB's info ``LOG`` -- its ``EVENT_LOG_v1``
lines -- and turns every blob file creation and deletion (and the flush and
compaction jobs around them) into typed events for listeners.

Usage
-----

.. code-block:: python

    import logging, os, tempfile
    import rocksdict
    import otel_blob

    logging.basicConfig(level=logging.INFO)
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_enable_blob_files(True)
    opts.set_min_blob_size(512)
    db = rocksdict.Rdict(tempfile.mkdtemp(), opts)

    w = otel_blob.watch(db, otel_blob.LoggingListener())
    for i in range(100):
        db[b"key%d" % i] = os.urandom(4096)
    db.flush()
    db.close()
    w.stop()   # drains the LOG to its end: every event is delivered on return

Write your own listener by overriding what you need; every method has a no-op
default (see :class:`EventListener`). ``watch(path)`` follows a DB that another
process (or library) writes, from the end of its LOG unless ``from_start=True``.

The package is laid out along the data's way, each step importing only the ones
before it: ``source`` (the LOG files) -> ``decode`` (what the lines mean) ->
``watching`` (the loop, listeners, checkpoints) -> ``telemetry`` (the OpenTelemetry
mapping) -> ``export`` (queues, exporters) -> ``instrument`` (the rocksdict
instrumentation and its helper process) and ``cli`` (``otel-blob``).
``import otel_blob`` loads no OpenTelemetry module.
"""

from __future__ import annotations

from typing import Any

from .decode import info as _info
from .decode.info import *  # noqa: F403 - every ...Info a listener receives (see decode/info.py)
from .decode.rules import parse_line
from .source import WatchError, info_log_path
from .version import __version__
from .watching import (
    EventListener,
    LoggingListener,
    TeeListener,
    Watch,
    WatchLoop,
    default_loop,
    start_watch,
    tee,
    watch,
)

__all__ = [
    *_info.__all__,
    "EventListener",
    "LoggingListener",
    "RocksdictInstrumentor",
    "TeeListener",
    "Watch",
    "WatchError",
    "WatchLoop",
    "__version__",
    "default_loop",
    "info_log_path",
    "parse_line",
    "start_watch",
    "tee",
    "watch",
]


def __getattr__(name: str) -> Any:
    # The instrumentor (and with it OpenTelemetry) is imported only when asked for:
    # the engine itself never imports opentelemetry.
    if name == "RocksdictInstrumentor":
        from .instrument.instrumentor import RocksdictInstrumentor

        return RocksdictInstrumentor
    raise AttributeError(f"module 'otel_blob' has no attribute {name!r}")
