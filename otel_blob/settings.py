"""Every setting of otel_blob, declared once: name, environment variable, parser, default, meaning.

Two families:

* :data:`INSTRUMENTATION` -- ``OTEL_PYTHON_ROCKSDICT_*``, read by the rocksdict
  instrumentation (``RocksdictInstrumentor().instrument(**kwargs)``) and passed on
  to its helper process. Precedence: keyword argument > environment variable >
  default; a value that cannot be understood logs a warning naming the variable
  and the default is used (a typo in the environment never breaks the application).
* :data:`CLI` -- ``OTEL_BLOB_*``, read by ``otel-blob``. Precedence: flag >
  environment variable > default; a bad value is a usage error (exit 2).

An empty variable is an unset one. ``docs/settings.md`` is checked against this
module by the test suite. Stdlib only.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = [
    "CLI",
    "DEFAULT_POLL_INTERVAL",
    "INSTRUMENTATION",
    "Setting",
    "Settings",
    "parse_bool",
    "sdk_disabled",
]

_log = logging.getLogger("otel_blob")

DEFAULT_POLL_INTERVAL = 0.01  # s between reads of a LOG that must be polled (inotify needs none)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(raw: str) -> bool:
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError("expected true or false")


parse_bool.expected = "true or false"  # type: ignore[attr-defined]


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return v

    parse.expected = ", ".join(allowed)  # type: ignore[attr-defined]
    return parse


def seconds(lo: float, hi: float) -> Callable[[str], float]:
    return _in_range(float, lo, hi, f"seconds from {lo:g} to {hi:g}")


def integer(lo: int, hi: int) -> Callable[[str], int]:
    return _in_range(int, lo, hi, f"an integer from {lo} to {hi}")


def _in_range(convert: Callable[[str], Any], lo: Any, hi: Any, expected: str) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            v = convert(raw)
        except ValueError:
            raise ValueError(f"expected {expected}") from None
        if not lo <= v <= hi:  # NaN fails both
            raise ValueError(f"expected {expected}")
        return v

    parse.expected = expected  # type: ignore[attr-defined]
    return parse


def path(raw: str) -> str:
    return raw


path.expected = "a path"  # type: ignore[attr-defined]


def patterns(raw: str) -> tuple[str, ...]:
    """Comma-separated glob patterns (``*`` matches across ``/``): ``/tmp/*,*/scratch-*``."""
    items = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not items:
        raise ValueError("expected comma-separated glob patterns")
    return items


patterns.expected = "comma-separated glob patterns"  # type: ignore[attr-defined]


def sdk_disabled(environ: Mapping[str, str]) -> bool:
    """OpenTelemetry's ``OTEL_SDK_DISABLED``, read as the SDK reads it (``true`` in any case): every
    signal is off. The instrumentation then patches nothing and starts no helper, and the CLI's
    pipeline exports nothing -- the SDK's own providers would drop everything anyway."""
    return environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def matches(path: str, globs: tuple[str, ...] | None) -> bool:
    """Does ``path`` match one of ``globs``?"""
    return any(fnmatch.fnmatchcase(path, g) for g in globs or ())


@dataclass(frozen=True)
class Setting:
    """One setting: ``name`` is the keyword argument (and the CLI option's dest)."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    doc: str

    @property
    def expected(self) -> str:
        return getattr(self.parse, "expected", "")

    def from_env(self, environ: Mapping[str, str]) -> Any:
        """The variable's value parsed, or None when unset or empty (ValueError if bad)."""
        raw = environ.get(self.env)
        if raw is None or not raw.strip():
            return None
        return self.parse(raw)


_SEVERITY = choice("info", "debug")
_EVENTS = choice("blob", "all")
_FILE_PATHS = choice("full", "hash", "none")
_POLL = seconds(0.001, 10)

INSTRUMENTATION: tuple[Setting, ...] = (
    Setting("enabled", "OTEL_PYTHON_ROCKSDICT_ENABLED", parse_bool, True,
            "switch the instrumentation on or off"),
    Setting("severity", "OTEL_PYTHON_ROCKSDICT_SEVERITY", _SEVERITY, "info",
            "severity of blob file log records (failures are always WARN)"),
    Setting("events", "OTEL_PYTHON_ROCKSDICT_EVENTS", _EVENTS, "blob",
            "`blob`: blob file records and the job spans they belong to; `all`: every job span and table file "
            "span events too"),
    Setting("poll_interval", "OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL", _POLL, DEFAULT_POLL_INTERVAL,
            "seconds between two reads when the LOG must be polled; on Linux the watcher otherwise sleeps on "
            "inotify and reads as soon as RocksDB writes"),
    Setting("file_paths", "OTEL_PYTHON_ROCKSDICT_FILE_PATHS", _FILE_PATHS, "full",
            "how file and DB paths are recorded: as they are, a SHA-256 prefix, or not at all"),
    Setting("mode", "OTEL_PYTHON_ROCKSDICT_MODE", choice("auto", "thread", "process"), "auto",
            "`process`: a helper process follows the LOGs and exports; `thread`: a thread of the application, "
            "through its providers; `auto`: `process` under `opentelemetry-instrument` unless providers are "
            "passed to `instrument()` or a `console` exporter is configured (it prints on the application's "
            "stdout), else `thread`"),
    Setting("helper_nice", "OTEL_PYTHON_ROCKSDICT_HELPER_NICE", integer(0, 19), 19,
            "niceness of the helper process (and of its autogroup, where the kernel schedules by session): "
            "19 lets it use only the CPU the application leaves (no slowdown of a CPU-bound writer; events "
            "wait while every core is busy); 0 competes as an equal (bench/README.md)"),
    Setting("include_dbs", "OTEL_PYTHON_ROCKSDICT_INCLUDE_DBS", patterns, None,
            "only databases whose absolute path matches one of these comma-separated glob patterns are followed "
            "and traced (default: all)"),
    Setting("exclude_dbs", "OTEL_PYTHON_ROCKSDICT_EXCLUDE_DBS", patterns, None,
            "databases whose absolute path matches one of these comma-separated glob patterns are neither followed "
            "nor traced -- scratch databases, tests (wins over include)"),
    Setting("helper_exit_timeout", "OTEL_PYTHON_ROCKSDICT_HELPER_EXIT_TIMEOUT", seconds(0, 300), 30.0,
            "seconds the helper process may go on delivering once the application has exited (retrying while "
            "the Collector is away); what is left then is counted and reported (OTEL_PYTHON_ROCKSDICT_STATE_DIR)"),
    Setting("state_dir", "OTEL_PYTHON_ROCKSDICT_STATE_DIR", path, None,
            "where the helper process writes its log (`helper.log`) and what it could not deliver "
            "(`undelivered.jsonl`, reported by the next run); default `$XDG_STATE_HOME/otel_blob` "
            "(`~/.local/state/otel_blob`)"),
)

CLI: tuple[Setting, ...] = (
    Setting("checkpoint", "OTEL_BLOB_CHECKPOINT", path, None,
            "persist how far each LOG was delivered; resume from it"),
    Setting("checkpoint_interval", "OTEL_BLOB_CHECKPOINT_INTERVAL", seconds(0.01, 60), 0.5,
            "at most one checkpoint write per interval"),
    Setting("log_dir", "OTEL_BLOB_LOG_DIR", path, None,
            "RocksDB's db_log_dir, when the LOG is not in DB_DIR (default: read from the database's OPTIONS file)"),
    Setting("from_start", "OTEL_BLOB_FROM_START", parse_bool, False,
            "read the current DB session from its first LOG line, not the LOG from its end (a checkpoint wins)"),
    Setting("poll_interval", "OTEL_BLOB_POLL_INTERVAL", _POLL, DEFAULT_POLL_INTERVAL,
            "seconds between two reads of a LOG that must be polled (inotify wakes the watcher otherwise)"),
    Setting("exit_on_missing", "OTEL_BLOB_EXIT_ON_MISSING", parse_bool, False,
            "exit (status 1) when a database directory disappears, instead of waiting for it"),
    Setting("console", "OTEL_BLOB_CONSOLE", parse_bool, False,
            "print one line per blob file event instead of exporting"),
    Setting("severity", "OTEL_BLOB_SEVERITY", _SEVERITY, "info",
            "severity of blob file log records: info or debug"),
    Setting("events", "OTEL_BLOB_EVENTS", _EVENTS, "blob",
            "blob: blob file events and their jobs; all: also table files and every job"),
    Setting("file_paths", "OTEL_BLOB_FILE_PATHS", _FILE_PATHS, "full",
            "full, hash or none: how file and DB paths are recorded"),
    Setting("stat_files", "OTEL_BLOB_STAT_FILES", parse_bool, False,
            "record blob files' sizes on disk (stat when the event is read); makes re-exports differ when a file "
            "was deleted meanwhile"),
    Setting("progress", "OTEL_BLOB_PROGRESS", choice("auto", "always", "never"), "auto",
            "replay's progress bar on stderr: auto (on a terminal), always, never"),
    Setting("shutdown_timeout", "OTEL_BLOB_SHUTDOWN_TIMEOUT", seconds(0, 600), 20.0,
            "seconds the exporters may go on retrying after SIGINT/SIGTERM or the end of a replay; what is "
            "left then is counted as lost (exit status 3) -- keep it below the grace period of whatever stops "
            "the process (Kubernetes: terminationGracePeriodSeconds, 30 by default)"),
)


@dataclass(frozen=True)
class Settings:
    """The instrumentation's settings (:data:`INSTRUMENTATION`), resolved."""

    enabled: bool = True
    severity: str = "info"
    events: str = "blob"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    file_paths: str = "full"
    mode: str = "auto"
    helper_nice: int = 19
    include_dbs: tuple[str, ...] | None = None
    exclude_dbs: tuple[str, ...] | None = None
    helper_exit_timeout: float = 30.0
    state_dir: str | None = None

    def follows(self, db_path: str) -> bool:
        """Is the database at ``db_path`` (absolute) one to follow and trace?"""
        if matches(db_path, self.exclude_dbs):
            return False
        return self.include_dbs is None or matches(db_path, self.include_dbs)

    @classmethod
    def resolve(cls, kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in INSTRUMENTATION:
            given = kwargs.get(s.name)
            try:
                if given is not None:
                    where = f"keyword argument {s.name}"
                    if isinstance(given, bool) and s.parse is parse_bool:
                        values[s.name] = given
                    elif isinstance(given, (list, tuple)) and s.parse is patterns:
                        values[s.name] = patterns(",".join(map(str, given)))
                    else:
                        values[s.name] = s.parse(str(given))
                else:
                    where = s.env
                    value = s.from_env(env)
                    if value is not None:
                        values[s.name] = value
            except (ValueError, TypeError):
                raw = given if given is not None else env.get(s.env)
                _log.warning("ignoring %s=%r (expected %s); using the default %r", where, raw, s.expected, s.default)
        return cls(**values)

