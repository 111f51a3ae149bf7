"""``python -m otel_blob``: the ``otel-blob`` command."""

import sys

from .cli import main

sys.exit(main())
