"""``otel-blob``: blob file telemetry for RocksDB servers that are not Python.

Commands::

    otel-blob watch DB_DIR [DB_DIR ...]   follow running databases, export their blob file telemetry
    otel-blob replay LOG [LOG ...]        export the events of existing LOG / LOG.old.* files
    otel-blob demo                        a temporary blob-enabled database, its blob file lifecycle

Exporters follow OpenTelemetry's environment variables (``OTEL_EXPORTER_OTLP_*``,
``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``); every flag has an ``OTEL_BLOB_*`` variable (the flag
wins; :data:`otel_blob.settings.CLI`). Exit statuses (:mod:`.errors`): 0 every event
delivered (a watch also after SIGINT/SIGTERM), 1 a runtime failure (a file that cannot be
read, a database directory that disappeared with ``--exit-on-missing``), 2 bad usage
(flag, value, path), 3 ran to its end but telemetry was lost (the last line says what);
a replay stopped by a signal exits 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from ..export.pipeline import check_endpoint
from ..settings import CLI, Setting
from ..version import __version__
from .console import PROG, say
from .errors import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, ConfigError, RuntimeFailure, UsageError

__all__ = ["main"]

_SETTINGS = {s.name: s for s in CLI}


def _url(raw: str) -> str:
    try:
        return check_endpoint(raw, "--otlp")
    except ConfigError:
        raise ValueError("expected a URL such as http://localhost:4317") from None


def _typed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type=`` whose error message is the parser's own."""

    def conv(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r}: {exc}") from None

    return conv


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, no usage block: the operator's log stays readable.
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _option(group: Any, flag: str, name: str, *, metavar: str | None = None, switch: bool = False) -> None:
    """A flag for the setting ``name``: its help is the setting's, with its variable."""
    s: Setting = _SETTINGS[name]
    default = "" if s.default in (None, False) else f" (default {s.default})"
    help_text = f"{s.doc}{default} [{s.env}]"
    if switch:
        group.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help_text)
    elif s.parse.__name__ == "path":
        group.add_argument(flag, dest=name, metavar=metavar, help=help_text)
    else:
        group.add_argument(flag, dest=name, metavar=metavar, type=_typed(s.parse), help=help_text)


def _add_telemetry_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("telemetry")
    g.add_argument("--otlp", metavar="URL", type=_typed(_url),
                   help="OTLP endpoint (default: OTEL_EXPORTER_OTLP_ENDPOINT; protocol: OTEL_EXPORTER_OTLP_PROTOCOL, "
                        "grpc or http/protobuf)")
    _option(g, "--console", "console", switch=True)
    _option(g, "--severity", "severity")
    _option(g, "--events", "events")
    _option(g, "--file-paths", "file_paths")
    _option(g, "--shutdown-timeout", "shutdown_timeout", metavar="SECONDS")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more messages on stderr")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="OpenTelemetry for RocksDB blob files, from the database's info LOG.",
                epilog="exit status: 0 every event delivered, 1 a runtime failure, 2 bad usage, 3 telemetry was "
                       "lost (the last line says what); a replay stopped by a signal: 128 + its number")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    w = sub.add_parser("watch", help="follow running databases and export their blob file telemetry",
                       description="Follow the info LOG of each database and export its blob file telemetry "
                                   "until SIGINT/SIGTERM.")
    w.add_argument("db_dirs", nargs="+", metavar="DB_DIR")
    _option(w, "--log-dir", "log_dir", metavar="DIR")
    _option(w, "--from-start", "from_start", switch=True)
    _option(w, "--checkpoint", "checkpoint", metavar="FILE")
    _option(w, "--checkpoint-interval", "checkpoint_interval", metavar="SECONDS")
    _option(w, "--poll-interval", "poll_interval", metavar="SECONDS")
    _option(w, "--exit-on-missing", "exit_on_missing", switch=True)
    _option(w, "--stat-blob-files", "stat_files", switch=True)
    _add_telemetry_flags(w)

    r = sub.add_parser("replay", help="export the events of existing LOG files with their original timestamps",
                       description="Export the events of existing LOG / LOG.old.* files (or of every LOG file of "
                                   "a DB directory) exactly as a live watch would have.")
    r.add_argument("logs", nargs="+", metavar="LOG")
    r.add_argument("--db", metavar="PATH", dest="db_name",
                   help="the database path to report (default: from the LOG header)")
    _option(r, "--progress", "progress")
    _add_telemetry_flags(r)

    d = sub.add_parser("demo", help="a temporary blob-enabled database and its blob file lifecycle",
                       description="Create a temporary blob-enabled rocksdict database, run a short workload "
                                   "and show every blob file created and deleted. Exports to OTLP too when an "
                                   "endpoint is configured (--otlp or OTEL_EXPORTER_OTLP_ENDPOINT).")
    d.add_argument("--otlp", metavar="URL", type=_typed(_url), help="also export to this OTLP endpoint")
    d.add_argument("--rounds", type=int, default=4, metavar="N", help="write/flush rounds (default 4)")
    d.add_argument("--keep", metavar="DIR", help="create the database in DIR (must not exist) and keep it")
    d.add_argument("-v", "--verbose", action="count", default=0)
    return p


def _resolve_env(args: argparse.Namespace, environ: dict[str, str]) -> None:
    """Fill the settings whose flag was not given from their OTEL_BLOB_* variable, then the default."""
    for s in CLI:
        if not hasattr(args, s.name) or getattr(args, s.name) is not None:
            continue
        try:
            value = s.from_env(environ)
        except ValueError as exc:
            raise UsageError(f"bad value {s.env}={environ.get(s.env)!r}: {exc}") from None
        setattr(args, s.name, s.default if value is None else value)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    environ = dict(os.environ)
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError(f"a command is required: watch, replay or demo (see '{PROG} --help')")
        _resolve_env(args, environ)
        _setup_logging(getattr(args, "verbose", 0))
        if args.command == "watch":
            from .watch_command import cmd_watch

            return cmd_watch(args, environ)
        if args.command == "replay":
            from .replay_command import cmd_replay

            return cmd_replay(args, environ)
        from .demo import run_demo

        return run_demo(args, environ)
    except (UsageError, ConfigError) as exc:
        say(f"error: {exc}")
        return EXIT_USAGE
    except RuntimeFailure as exc:
        say(f"error: {exc}")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
