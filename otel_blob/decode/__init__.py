"""Step 2 of the data's way: what RocksDB's LOG lines mean (pure: no I/O, no OpenTelemetry).

``info`` holds the typed events listeners receive; ``rules`` the one rule set for
RocksDB's lines (``parse_line``); ``tables`` the decoder's bounded memory (live
blob files, jobs); ``decoder`` turns one DB's lines into ``...Info`` values.
"""

from . import info
from .decoder import LogDecoder
from .info import *  # noqa: F403 - the typed events, as info.__all__ lists them
from .rules import LogLine, parse_line

__all__ = [*info.__all__, "LogDecoder", "LogLine", "parse_line"]
