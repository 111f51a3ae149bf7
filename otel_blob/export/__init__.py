"""Step 5 of the data's way: getting telemetry out -- queues, exporters, providers.

``queue`` -- sized, retrying export queues with backpressure and counted drops;
``direct_logs`` and ``otlp_encode`` -- the cheap paths for our own records, taken only
when ``fast_path`` finds them byte-identical to the stock exporters; ``private`` -- the
one module that imports private names of the SDK and its exporters; ``pipeline`` --
the providers a process of ours (the CLI, the helper) builds from the
``OTEL_*`` environment.
"""

from .pipeline import ExportPipeline, PipelineOptions, ConfigError, otlp_configured
from .queue import DeliveryQueue, ReliableLogRecordProcessor, ReliableSpanProcessor

__all__ = [
    "DeliveryQueue",
    "ExportPipeline",
    "PipelineOptions",
    "ReliableLogRecordProcessor",
    "ReliableSpanProcessor",
    "ConfigError",
    "otlp_configured",
]
