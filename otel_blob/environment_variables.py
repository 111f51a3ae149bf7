"""Environment variables of otel_blob (precedence everywhere: keyword argument > env var > default).

A value that cannot be understood logs a warning and the default is used.
"""

OTEL_PYTHON_ROCKSDICT_ENABLED = "OTEL_PYTHON_ROCKSDICT_ENABLED"
"""``true`` (default) / ``false``: switch the rocksdict instrumentation on or off."""

OTEL_PYTHON_ROCKSDICT_SEVERITY = "OTEL_PYTHON_ROCKSDICT_SEVERITY"
"""``info`` (default) or ``debug``: severity of blob file log records (failures are always WARN)."""

OTEL_PYTHON_ROCKSDICT_EVENTS = "OTEL_PYTHON_ROCKSDICT_EVENTS"
"""``blob`` (default): blob file events, with the job spans they belong to; ``all``: also table
file events as span events and every flush/compaction/recovery job as a span."""

OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL = "OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL"
"""Seconds between two reads of the LOG when it must be polled (default ``0.01``; 0.001 .. 10). On
Linux the watcher sleeps on inotify while the LOG is quiet and reads as soon as RocksDB writes; it
polls only during a rotation, a backlog or backpressure, or where inotify is unavailable."""

OTEL_PYTHON_ROCKSDICT_FILE_PATHS = "OTEL_PYTHON_ROCKSDICT_FILE_PATHS"
"""``full`` (default): record file and DB paths; ``hash``: a stable SHA-256 prefix instead;
``none``: leave path attributes out (file names and numbers stay)."""

OTEL_PYTHON_ROCKSDICT_MODE = "OTEL_PYTHON_ROCKSDICT_MODE"
"""Where the LOG is followed and the telemetry made: ``process`` -- in a helper process the
instrumentation starts (nothing per event in the application; it exports with its own
providers configured from the same ``OTEL_*`` environment, with the application's
resource); ``thread`` -- on a thread of the application, through the application's
providers; ``auto`` (default) -- ``process`` under ``opentelemetry-instrument`` (the SDK
is configured from the environment) unless providers are passed to ``instrument()``,
``thread`` otherwise."""

OTEL_PYTHON_ROCKSDICT_HELPER_NICE = "OTEL_PYTHON_ROCKSDICT_HELPER_NICE"
"""Niceness of the helper process (``0`` .. ``19``, default ``5``): how much the helper yields the CPU
to the application when both want it. Higher: less cost to a CPU-bound application, more delay
under load (2 cores, ~4,700 blob events/s: 5 gives a throughput ratio of 0.96 and ~1 s p99 delay,
0 gives 0.81 and ~0.15 s; see bench/README.md)."""
