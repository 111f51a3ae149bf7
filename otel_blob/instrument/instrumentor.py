"""RocksdictInstrumentor: hooks every ``rocksdict.Rdict`` opened after start-up.

* ``Rdict(...)`` -- a read-write open starts a DB session and a new LOG; the
  session is followed from its first LOG line (recovery included) until RocksDB
  logs its end (``Shutdown complete``) -- which may be long after ``close()``:
  another handle (a column family from ``get_column_family``, an iterator, a
  snapshot) keeps the database open, and its flushes, compactions and closing
  purge are followed too. Read-only and secondary opens start no session and are
  not followed (they create and delete no blob files; reading the primary's LOG
  again would export its events twice).
* ``Rdict.flush()`` / ``Rdict.compact_range()`` (also on column family handles) --
  recorded as spans ``rocksdict.flush`` / ``rocksdict.compact_range`` (database
  semantic conventions: ``db.system.name``, ``db.operation.name``, ``db.namespace``,
  and the column family they act on); the background job span they cause becomes
  their child. ``get_column_family`` / ``create_column_family`` are wrapped only to
  know which column family a handle is.
* ``include_dbs`` / ``exclude_dbs`` (glob patterns of absolute paths): databases to
  leave alone -- neither followed nor traced.
* Nothing waits: not an open, not ``close()``, not a call, and in process mode not
  the exit. Draining a LOG is the watch loop's work (the helper process, or a
  thread), exporting the exporters'. (Thread mode's exit drains what the LOGs hold
  into the application's providers, whose shutdown then exports it: see below.)

Usage: ``opentelemetry-instrument python app.py`` (entry point ``rocksdict``;
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=rocksdict`` turns it off, and so does
``OTEL_SDK_DISABLED=true``: nothing patched, no helper), or
``RocksdictInstrumentor().instrument(tracer_provider=..., logger_provider=...,
meter_provider=...)`` and ``.uninstrument()``. Settings (keyword > environment >
default): :data:`otel_blob.settings.INSTRUMENTATION`, docs/settings.md; what is
emitted: docs/telemetry.md. Databases opened before ``instrument()`` or under
``suppress_instrumentation`` are not followed. Linux only (``/proc/locks``,
inotify; elsewhere it polls). The helper logs to ``<state dir>/helper.log`` and
records what it could not deliver within ``helper_exit_timeout`` after the
application's exit in ``undelivered.jsonl``, reported by the next run.

Where the LOG is followed (``mode``, ``OTEL_PYTHON_ROCKSDICT_MODE``): in a helper
process (:mod:`otel_blob.instrument.server`; nothing per event in the
application, the default under ``opentelemetry-instrument``; it finishes the
sessions still open when the application exits) or on a watcher thread of the
application through its own providers (the default when ``instrument()`` is
called from code with providers, and the fallback when the helper cannot run or
dies -- from where it left off). In thread mode an exit hook, registered after
the SDK's, delivers what the LOGs hold before the SDK providers shut down; what
RocksDB logs later, while the interpreter drops databases still open, cannot be
followed in-process (one warning says so).

Nothing here raises into the application: every wrapper guards its own work and
calls rocksdict exactly as it would be called without us.
"""

from __future__ import annotations

import atexit
import itertools
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
from ..settings import Settings, sdk_disabled
from ..source.identity import identity_of
from ..source.layout import info_log_path
from ..source.locks import holds_lock
from ..telemetry import SCHEMA_URL, SCOPE_NAME, SCOPE_VERSION, TelemetryListener, shown_path
from ..watching.loop import default_loop
from ..watching.sessions import SessionWatches
from .client import HelperClient, PendingSession

_log = logging.getLogger("otel_blob")

_WRAPPED = ("flush", "compact_range", "get_column_family", "create_column_family")
LOG_PATHS_MAX = 1024  # DB paths whose LOG path is remembered
CF_HANDLES_MAX = 4096  # column family handles whose name is remembered (by id; the oldest forgotten)


class _LocalCall:
    """An application call whose span is the application's (thread mode)."""

    __slots__ = ("span", "context", "op")

    def __init__(self, span: Any, register: Any) -> None:
        self.span = span
        self.context = trace.set_span_in_context(span)
        self.op = register(self.context)

    def done(self, error: BaseException | None = None) -> None:
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)))
        self.op.done()
        self.span.end()


class RocksdictInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Blob file telemetry for every ``rocksdict.Rdict``.

    ``instrument(tracer_provider=, logger_provider=, meter_provider=, **settings)``;
    the settings (``otel_blob.settings.INSTRUMENTATION``) not given come from the
    ``OTEL_PYTHON_ROCKSDICT_*`` environment variables, then defaults.
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
        if sdk_disabled(os.environ):  # nothing would be exported: cost the application nothing
            _log.info("OTEL_SDK_DISABLED=true: rocksdict is not instrumented")
            return
        self._providers = {k: kwargs.get(k) for k in ("tracer_provider", "logger_provider", "meter_provider")}
        self.process_mode = self._wants_process()
        self._listener: Any = None  # the in-process TelemetryListener, made when first needed
        self._sessions: SessionWatches | None = None  # in-process session watches, made when first needed
        self._helper: HelperClient | None = None
        self._helper_failed = False
        self._lock = threading.Lock()
        self._keys = itertools.count(1)
        self._not_followed: set[str] = set()  # DB paths opened read-only (said once each)
        self._cf_names: dict[int, str] = {}  # id(column family handle) -> its name
        self._log_paths: dict[str, str] = {}  # DB path -> its LOG's path
        self._tracer = trace.get_tracer(SCOPE_NAME, SCOPE_VERSION, tracer_provider=kwargs.get("tracer_provider"),
                                        schema_url=SCHEMA_URL)
        cls = rocksdict.Rdict
        self._had_init = "__init__" in cls.__dict__
        wrap_function_wrapper(cls, "__init__", self._init_wrapper)
        wrap_function_wrapper(cls, "flush", self._manual_wrapper("rocksdict.flush", "flush"))
        wrap_function_wrapper(cls, "compact_range", self._manual_wrapper("rocksdict.compact_range", "compact_range"))
        wrap_function_wrapper(cls, "get_column_family", self._cf_wrapper)
        wrap_function_wrapper(cls, "create_column_family", self._cf_wrapper)
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
        # A console exporter prints on the application's stdout, which the helper does not hold.
        if any("console" in os.environ.get(f"OTEL_{s}_EXPORTER", "").lower() for s in ("TRACES", "LOGS", "METRICS")):
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

    def _in_process(self) -> SessionWatches:
        with self._lock:
            if self._sessions is None:
                self._sessions = SessionWatches(self.listener, default_loop, poll_interval=self.settings.poll_interval)
            return self._sessions

    def _helper_client(self) -> HelperClient | None:
        """The helper process, started at the first open (None: watch in-process)."""
        if not self.process_mode or self._helper_failed:
            return None
        with self._lock:
            if self._helper is None and not self._helper_failed:
                try:
                    res = getattr(trace.get_tracer_provider(), "resource", None)
                    attrs = dict(res.attributes) if res is not None else {}
                    self._helper = HelperClient(self.settings, attrs, self._on_helper_failure)
                except Exception:
                    _log.warning("could not start the helper process; watching in-process", exc_info=True)
                    self._helper_failed = True
            return self._helper

    def _on_helper_failure(self, pending: list[PendingSession]) -> None:
        self._helper_failed = True
        sessions = self._in_process()
        for s in pending:  # from where the helper's delivery ended: nothing twice, nothing lost
            sessions.open(s.key, s.db_path, s.log_path, s.anchor, s.position)

    def _after_fork_in_child(self) -> None:
        # A forked child inherits the parent's watches (and maybe a lock held by the
        # parent's watcher thread). Draining them at the child's exit would export
        # the parent's events a second time: the child forgets them and follows only
        # the databases it opens itself. (The shared WatchLoop does the same.) The
        # parent's helper is the parent's: the child closes its copy of the pipes.
        if not getattr(self, "_patched", False):
            return
        self._lock = threading.Lock()
        if self._sessions is not None:
            self._sessions.forget()
        if self._helper is not None:
            self._helper.forget_after_fork()
            self._helper = None
        if self._listener is not None:
            self._listener.renew_locks()

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
        atexit.unregister(self._at_exit)
        self._stop_watching(at_exit=False)
        if self._helper is not None:
            self._helper.detach()
            self._helper = None

    # -- the wrappers -------------------------------------------------------------

    def _init_wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        # rocksdict opens the DB in __new__; __init__ is object's and takes no
        # arguments. By now the DB is open and, for a read-write open, its new LOG begun.
        if self._had_init:  # (a rocksdict that has an __init__ of its own gets it called)
            wrapped(*args, **kwargs)
        self._cf_names.pop(id(instance), None)  # a new object where a dropped handle was: the default CF
        if is_instrumentation_enabled():
            try:
                self._opened(instance)
            except Exception:
                _log.exception("could not start following a rocksdict database")

    def _cf_wrapper(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        handle = wrapped(*args, **kwargs)
        name = args[0] if args else kwargs.get("name")
        if isinstance(name, str):
            names = self._cf_names
            names[id(handle)] = name
            if len(names) > CF_HANDLES_MAX:
                try:  # (two threads may evict at once: never an error in the application's call)
                    names.pop(next(iter(names)), None)
                except (StopIteration, RuntimeError):
                    pass
        return handle

    def _opened(self, rdict: Any) -> None:
        db_path = os.path.abspath(rdict.path())
        if not self.settings.follows(db_path):
            return
        if holds_lock(os.path.join(db_path, "LOCK")) is False:
            # Read-only or secondary: no session of its own, no LOG of its own in the DB directory.
            if db_path not in self._not_followed:
                self._not_followed.add(db_path)
                _log.debug("not following %s: opened read-only or as a secondary", db_path)
            return
        log_path = self._log_paths.get(db_path)
        if log_path is None:
            # Where a DB's LOG is (db_log_dir, read from its OPTIONS file) is asked once per path:
            # a program that opens and closes one database often pays it once.
            log_path = self._log_paths[db_path] = info_log_path(db_path)
            if len(self._log_paths) > LOG_PATHS_MAX:
                del self._log_paths[next(iter(self._log_paths))]
        anchor = identity_of(log_path)  # the LOG RocksDB just began, wherever it is renamed to later
        key = next(self._keys)
        helper = self._helper_client()
        if helper is None or not helper.watch(key, db_path, log_path, anchor):
            self._in_process().open(key, db_path, log_path, anchor)
        # Registered (again) after the SDK's providers registered theirs: atexit
        # runs last-in first-out, so the drain comes before their shutdown.
        atexit.unregister(self._at_exit)
        atexit.register(self._at_exit)

    def _manual_wrapper(self, span_name: str, kind: str) -> Any:
        def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            if not is_instrumentation_enabled():
                return wrapped(*args, **kwargs)
            try:
                db_path = os.path.abspath(instance.path())
                if not self.settings.follows(db_path):
                    return wrapped(*args, **kwargs)
                call = self._start_call(span_name, kind, db_path, self._cf_names.get(id(instance), "default"))
            except Exception:
                _log.exception("could not trace %s", span_name)
                return wrapped(*args, **kwargs)
            token = otel_context.attach(call.context)
            error: BaseException | None = None
            try:
                return wrapped(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                otel_context.detach(token)
                call.done(error)

        return wrapper

    def _start_call(self, span_name: str, kind: str, db_path: str, cf: str) -> Any:
        """The span of an application call and who matches the jobs it causes to it.

        Process mode: the helper records the span (with ids chosen here, as a child of the
        application's current span) and matches the jobs: the application's providers hold
        nothing of ours -- not even at exit, while its Collector is away. Thread mode: the
        span is the application's, the in-process listener matches the jobs."""
        attributes = {"db.system.name": "rocksdb", "db.operation.name": kind, "rocksdb.column_family": cf}
        shown = shown_path(db_path, self.settings.file_paths)
        if shown is not None:  # None: paths are not recorded (file_paths=none)
            attributes["db.namespace"] = shown
            attributes["rocksdb.db.path"] = shown
        helper = self._helper
        if helper is not None and helper.alive:
            return helper.call(span_name, db_path, kind, cf, attributes)
        return _LocalCall(self._tracer.start_span(span_name, attributes=attributes),
                          lambda ctx: self.listener.manual_operation(db_path, kind, ctx, cf=cf))

    # -- waiting and draining ---------------------------------------------------------

    @property
    def helper_pid(self) -> int | None:
        """The helper process's pid (None in thread mode, or before the first open)."""
        helper = getattr(self, "_helper", None)
        return helper.proc.pid if helper is not None else None

    def wait_for_sessions(self, timeout: float | None = None) -> bool:
        """Wait until every DB session opened so far has ended (RocksDB logged its
        ``Shutdown complete``) and everything it logged was delivered to the exporters
        (in process mode: exported by the helper). True if so within ``timeout`` s.

        For tests and orderly shutdowns; the instrumentation itself never waits.
        """
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        helper = getattr(self, "_helper", None)
        if helper is not None and helper.alive:
            if not helper.wait_idle(timeout):
                return False
        sessions = getattr(self, "_sessions", None)
        if sessions is None:
            return True
        while not sessions.idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            sessions.wait_change(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
        return True

    def _at_exit(self) -> None:
        """Thread mode: deliver what every LOG holds now, before the SDK's providers shut down.

        Process mode: nothing -- the helper sees the application's end when its pipe
        closes (after the interpreter dropped every database) and finishes on its own.
        """
        self._stop_watching(at_exit=True)

    def _stop_watching(self, at_exit: bool) -> None:
        sessions = getattr(self, "_sessions", None)
        if sessions is None:
            return
        still_open = sessions.stop_all(final=False)
        if not still_open:
            return
        dbs = ", ".join(sorted({w.db_path for w in still_open}))
        if at_exit:
            _log.warning("%d database(s) still open at exit (%s): what RocksDB logs while the interpreter closes "
                         "them is not exported in thread mode; close them before exit, or use "
                         "OTEL_PYTHON_ROCKSDICT_MODE=process", len(still_open), dbs)
        else:
            _log.info("uninstrumented with %d database(s) open (%s): what RocksDB logs for them from now on is "
                      "not followed", len(still_open), dbs)
