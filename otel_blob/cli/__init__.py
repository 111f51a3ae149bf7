"""Step 7: ``otel-blob``, the sidecar command -- watch, replay, demo.

``main`` -- arguments (every flag a setting of :data:`otel_blob.settings.CLI`) and
exit codes; ``watch_command`` / ``replay_command`` / ``demo`` -- the commands, each
driving the engine of :mod:`otel_blob.watching`; ``console`` -- what is printed.
"""

from .main import main

__all__ = ["main"]
