"""Step 4 of the data's way: the OpenTelemetry mapping of the event stream.

:class:`TelemetryListener` turns the typed events into log records, job spans
with span events, and metrics (the contract is docs/telemetry.md). The first
step that imports OpenTelemetry (the API, and the SDK's ``IdGenerator``).

One module per part: ``listener`` (the callbacks, handing each event to a part),
``file_events`` (blob/table file events: records, span events, metrics),
``job_events`` (job events onto spans), ``spans`` (the job span lifecycle),
``manual`` (application calls that parent job spans), ``ids`` (deterministic
ids), ``attributes`` (attributes, timestamps, bodies), ``paths`` (the path
policy), ``metrics`` (instruments, per-batch sums), ``live`` (what the live
counters counted), ``db_state`` (one DB's parts), ``stats``, ``scope`` (the
instrumentation scope and semantic-conventions schema of everything we emit).
"""

from .attributes import details_attributes
from .ids import DeterministicIdGenerator, seeded_ids
from .listener import TelemetryListener
from .manual import ManualOp
from .paths import hash_path, shown_path
from .scope import SCHEMA_URL, SCOPE_NAME, SCOPE_VERSION
from .stats import TelemetryStats

__all__ = [
    "SCHEMA_URL",
    "SCOPE_NAME",
    "SCOPE_VERSION",
    "DeterministicIdGenerator",
    "ManualOp",
    "TelemetryListener",
    "TelemetryStats",
    "details_attributes",
    "hash_path",
    "seeded_ids",
    "shown_path",
]
