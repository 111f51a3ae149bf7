"""RocksdictInstrumentor: hooks every ``rocksdict.Rdict`` opened after start-up.

* ``Rdict(...)`` -- once the DB is open, its LOG is watched from the start of
  the file RocksDB just began (recovery included), one watch per LOG.
* ``Rdict.close()`` -- drains every remaining event (also the deletions RocksDB
  logs while closing) before returning.
* ``Rdict.flush()`` / ``Rdict.compact_range()`` -- recorded as spans
  ``rocksdict.flush`` / ``rocksdict.compact_range``; the background job span they
  cause becomes their child.
* process exit -- an ``atexit`` hook, registered after the SDK's own, drains all
  watches before the SDK providers shut down.

Where the LOG is followed (``mode``, ``OTEL_PYTHON_ROCKSDICT_MODE``): in a helper
process (:mod:`otel_blob.helper`; nothing per event in the application, the
default under ``opentelemetry-instrument``) or on a watcher thread of the
application through its own providers (the default when ``instrument()`` is
called from code, and the fallback when the helper cannot run).

Nothing here raises into the application: every wrapper guards its own work and
calls rocksdict exactly as it would be called without us.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import Any, Collection

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from ..package import _instruments
from ..settings import Settings
from ..source.layout import info_log_path
from ..telemetry.listener import TelemetryListener, shown_path
from ..watch.api import start_watch
from ..watch.db_watch import Watch
from ..watch.loop import default_loop
from .client import HelperClient

_log = logging.getLogger("otel_blob")

_WRAPPED = ("close", "flush", "compact_range")


class RocksdictInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Blob file telemetry for every ``rocksdict.Rdict``.

    ``instrument(tracer_provider=, logger_provider=, meter_provider=, enabled=,
    severity=, events=, poll_interval=, file_paths=)``; settings not given come
    from the ``OTEL_PYTHON_ROCKSDICT_*`` environment variables, then defaults.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        import rocksdict

        self.settings = Settings.resolve(kwargs)
        self._patched = False
        if not self.settings.enabled:
            _log.info("rocksdict instrumentation disabled by configuration")
            return
        self._providers = {k: kwargs.get(k) for k in ("tracer_provider", "logger_provider", "meter_provider")}
        self.process_mode = self._wants_process()
        self._listener: Any = None  # the in-process TelemetryListener, made when first needed
        self._helper: HelperClient | None = None
        self._helper_failed = False
        self._spawn_lock = threading.Lock()
        self._tracer = trace.get_tracer(__name__, tracer_provider=kwargs.get("tracer_provider"))
        self._lock = threading.Lock()
        self._watches: dict[str, Watch] = {}  # LOG path -> its in-process watch
        self._remote: set[str] = set()  # LOG paths the helper process follows
        self._handles: dict[int, str] = {}  # id(Rdict) -> LOG path
        cls = rocksdict.Rdict
        self._had_init = "__init__" in cls.__dict__
        wrap_function_wrapper(cls, "__init__", self._init_wrapper)
        wrap_function_wrapper(cls, "close", self._close_wrapper)
        wrap_function_wrapper(cls, "flush", self._manual_wrapper("rocksdict.flush", "flush"))
        wrap_function_wrapper(cls, "compact_range", self._manual_wrapper("rocksdict.compact_range", "compact_range"))
        self._patched = True
        if not getattr(RocksdictInstrumentor, "_fork_hook", False):
            RocksdictInstrumentor._fork_hook = True
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _wants_process(self) -> bool:
        mode = self.settings.mode
        if mode != "auto":
            return mode == "process"
        # auto: the helper builds its providers from the environment, which is where
        # opentelemetry-instrument took the application's from. Providers given in
        # code are the application's choice: then we use them, in-process.
        if any(p is not None for p in self._providers.values()):
            return False
        return "opentelemetry.instrumentation.auto_instrumentation" in sys.modules

    @property
    def listener(self) -> Any:
        """The in-process TelemetryListener (thread mode, or the helper's fallback)."""
        if self._listener is None:
            s = self.settings
            self._listener = TelemetryListener(
                severity=s.severity, kinds=s.events, file_paths=s.file_paths, **self._providers)
        return self._listener

    def _helper_client(self) -> HelperClient | None:
        """The helper process, started at the first open (None: watch in-process)."""
        if not self.process_mode or self._helper_failed:
            return None
        with self._spawn_lock:
            return self._helper or self._spawn_helper()

    def _spawn_helper(self) -> HelperClient | None:
        if self._helper is None:
            try:
                res = getattr(trace.get_tracer_provider(), "resource", None)
                attrs = dict(res.attributes) if res is not None else {}
                self._helper = HelperClient(self.settings, attrs, self._on_helper_failure)
            except Exception:
                _log.warning("could not start the helper process; watching in-process", exc_info=True)
                self._helper_failed = True
                return None
        return self._helper

    def _on_helper_failure(self, watched: list[tuple[str, str]]) -> None:
        with self._lock:
            self._helper_failed = True
            for db_path, log_path in watched:
                self._remote.discard(log_path)
                if log_path in self._handles.values():
                    self._start_thread_watch(db_path, log_path)

    def _start_thread_watch(self, db_path: str, log_path: str) -> None:
        w = self._watches.get(log_path)
        if w is not None and not w.stopped:
            return  # still following this DB (an Rdict dropped without close()): it moves on to the new LOG
        self._watches[log_path] = start_watch(
            db_path, log_path, self.listener, loop=default_loop, start="start",
            poll_interval=self.settings.poll_interval,
        )

    def _after_fork_in_child(self) -> None:
        # A forked child inherits the parent's watches (and maybe a lock held by the
        # parent's watcher thread). Draining them at the child's exit would export
        # the parent's events a second time: the child forgets them and watches only
        # the databases it opens itself. (The shared WatchLoop does the same.) The
        # parent's helper is the parent's: the child closes its copy of the pipes.
        if not getattr(self, "_patched", False):
            return
        self._lock = threading.Lock()
        self._spawn_lock = threading.Lock()
        self._watches = {}
        self._remote = set()
        self._handles = {}
        if self._helper is not None:
            self._helper.forget_after_fork()
            self._helper = None
        listener = self._listener
        if listener is not None and hasattr(listener, "_lock"):
            listener._lock = threading.Lock()

    def _uninstrument(self, **kwargs: Any) -> None:
        import rocksdict

        if not getattr(self, "_patched", False):
            return
        cls = rocksdict.Rdict
        for name in _WRAPPED:
            unwrap(cls, name)
        if self._had_init:
            unwrap(cls, "__init__")
        else:
            del cls.__init__  # rocksdict has none of its own: back to object.__init__
        self._patched = False
        atexit.unregister(self.drain_all)
        self.drain_all()

    # -- the wrappers -------------------------------------------------------------

    def _init_wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        # rocksdict opens the DB in __new__; __init__ is object's and takes no
        # arguments. By now the DB is open and its new LOG begun.
        if is_instrumentation_enabled():
            try:
                self._start(instance)
            except Exception:
                _log.exception("could not start watching a rocksdict database")

    def _start(self, rdict: Any) -> None:
        db_path = rdict.path()
        log_path = info_log_path(db_path)
        helper = self._helper_client()
        with self._lock:
            self._handles[id(rdict)] = log_path
            if helper is not None and helper.alive:
                if log_path not in self._remote:
                    self._remote.add(log_path)
                    helper.watch(os.path.abspath(db_path), log_path)
            else:
                self._start_thread_watch(db_path, log_path)
        # Registered (again) after the SDK's providers registered theirs: atexit
        # runs last-in first-out, so the drain comes before their shutdown.
        atexit.unregister(self.drain_all)
        atexit.register(self.drain_all)

    def _close_wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            with self._lock:
                log_path = self._handles.pop(id(instance), None)
                others = log_path in self._handles.values()
                w = self._watches.pop(log_path, None) if log_path and not others else None
                remote = log_path in self._remote and not others
                if remote:
                    self._remote.discard(log_path)
            if w is not None:
                w.stop()  # the DB is closed: deliver all it logged, the close included
            if remote and self._helper is not None:
                self._helper.close(log_path)  # the helper does the same; waits for its answer
        except Exception:
            _log.exception("draining a closed rocksdict database failed")
        return result

    def _manual_wrapper(self, span_name: str, kind: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            try:
                db_path = instance.path()
                attributes = {"db.system.name": "rocksdb"}
                shown = shown_path(os.path.abspath(db_path), self.settings.file_paths)
                if shown is not None:  # None: paths are not recorded (file_paths=none)
                    attributes["rocksdb.db.path"] = shown
                span = self._tracer.start_span(span_name, attributes=attributes)
                ctx = trace.set_span_in_context(span)
                with self._lock:
                    remote = self._helper is not None and self._handles.get(id(instance)) in self._remote
                sink = self._helper if remote else self.listener
                op = sink.manual_operation(db_path, kind, ctx)
            except Exception:
                _log.exception("could not trace %s", span_name)
                return wrapped(*args, **kwargs)
            token = otel_context.attach(ctx)
            try:
                return wrapped(*args, **kwargs)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise
            finally:
                otel_context.detach(token)
                op.done()
                span.end()

        return wrapper

    # -- draining -------------------------------------------------------------------

    def drain_all(self) -> None:
        """Deliver every event still in the LOGs and stop all watches (atexit)."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
            self._handles.clear()
            self._remote.clear()
            helper, self._helper = self._helper, None
        for w in watches:
            try:
                w.stop()
            except Exception:
                _log.exception("draining %s failed", w.log_path)
        if helper is not None:
            try:
                helper.shutdown()
            except Exception:
                _log.exception("stopping the helper process failed")
