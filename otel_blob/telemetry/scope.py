"""Who makes the telemetry: one instrumentation scope for every tracer, logger and meter of otel_blob.

Name ``otel_blob``, the package's version, and the schema of the semantic conventions the
attributes follow (``db.system.name``, ``db.operation.name``, ``db.namespace``, ``file.*``,
``error.type``: stable names since 1.30; docs/telemetry.md lists every attribute).
"""

from __future__ import annotations

from ..version import __version__

__all__ = ["SCHEMA_URL", "SCOPE_NAME", "SCOPE_VERSION"]

SCOPE_NAME = "otel_blob"
SCOPE_VERSION = __version__
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
