"""Settings with precedence keyword argument > environment variable > default.

A value that cannot be understood logs a warning naming the variable and falls
back to the default: a typo in the environment never breaks the application.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import environment_variables as ev

_log = logging.getLogger("otel_blob")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(raw: str) -> bool:
    """true | false"""
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(raw)


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        v = raw.strip().lower()
        if v not in allowed:
            raise ValueError(raw)
        return v

    parse.__doc__ = " | ".join(allowed)
    return parse


def _interval(raw: str) -> float:
    """seconds from 0.001 to 10"""
    v = float(raw)
    if not 0.001 <= v <= 10:
        raise ValueError(raw)
    return v


def _nice(raw: str) -> int:
    """an integer from 0 to 19"""
    v = int(raw)
    if not 0 <= v <= 19:
        raise ValueError(raw)
    return v


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    severity: str = "info"  # info | debug
    events: str = "blob"  # blob | all
    poll_interval: float = 0.01
    file_paths: str = "full"  # full | hash | none
    mode: str = "auto"  # auto | thread | process
    # The helper process's niceness, 0..19. 19: it takes the CPU the application leaves (bench/README.md:
    # x off 0.985 at 3,000 blob events/s on a saturated 2-core box, against 0.93 at 5 and 0.90 at 0).
    helper_nice: int = 19

    _SOURCES = {
        "enabled": (ev.OTEL_PYTHON_ROCKSDICT_ENABLED, _bool),
        "severity": (ev.OTEL_PYTHON_ROCKSDICT_SEVERITY, _choice("info", "debug")),
        "events": (ev.OTEL_PYTHON_ROCKSDICT_EVENTS, _choice("blob", "all")),
        "poll_interval": (ev.OTEL_PYTHON_ROCKSDICT_POLL_INTERVAL, _interval),
        "file_paths": (ev.OTEL_PYTHON_ROCKSDICT_FILE_PATHS, _choice("full", "hash", "none")),
        "mode": (ev.OTEL_PYTHON_ROCKSDICT_MODE, _choice("auto", "thread", "process")),
        "helper_nice": (ev.OTEL_PYTHON_ROCKSDICT_HELPER_NICE, _nice),
    }

    @classmethod
    def resolve(cls, kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, (var, parse) in cls._SOURCES.items():
            if kwargs.get(name) is not None:
                raw, where = kwargs[name], f"keyword argument {name}"
            elif env.get(var, "").strip():
                raw, where = env[var], var
            else:
                continue
            try:
                values[name] = _typed(name, raw, parse)
            except (ValueError, TypeError):
                _log.warning("otel_blob: ignoring %s=%r (expected %s); using the default %r",
                             where, raw, parse.__doc__ or parse.__name__.lstrip("_"), getattr(cls, name))
        return cls(**values)


def _typed(name: str, raw: Any, parse: Callable[[str], Any]) -> Any:
    """Parse a value given as a string (env) or as a Python value (kwarg: True, 0.05)."""
    if name == "enabled" and isinstance(raw, bool):
        return raw
    return parse(str(raw))
