"""Step 6: the rocksdict instrumentation -- the instrumentor, and the helper process it may start.

``instrumentor`` -- :class:`RocksdictInstrumentor` (the ``opentelemetry_instrumentor``
entry point ``rocksdict``); ``client`` / ``server`` -- the application's and the
helper's side of the helper process; ``protocol`` -- the messages between them.
"""

from .instrumentor import RocksdictInstrumentor

__all__ = ["RocksdictInstrumentor"]
