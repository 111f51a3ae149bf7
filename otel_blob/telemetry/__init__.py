"""Step 4 of the data's way: the OpenTelemetry mapping of the event stream.

:class:`TelemetryListener` turns the typed events into log records, job spans
with span events, and metrics (the contract is docs/telemetry.md). The first
step that imports OpenTelemetry (the API, and the SDK's ``IdGenerator``).
"""

from .listener import (
    DeterministicIdGenerator,
    ManualOp,
    TelemetryListener,
    TelemetryStats,
    details_attributes,
    hash_path,
    seeded_ids,
    shown_path,
)

__all__ = [
    "DeterministicIdGenerator",
    "ManualOp",
    "TelemetryListener",
    "TelemetryStats",
    "details_attributes",
    "hash_path",
    "seeded_ids",
    "shown_path",
]
