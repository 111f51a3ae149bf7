"""``python -m otel_blob.helper``: the instrumentation's helper process (see :mod:`otel_blob.instrument.server`)."""

import sys

if __name__ == "__main__":
    from .instrument.server import serve

    sys.exit(serve())
