"""Step 2 of the data's way: what RocksDB's LOG lines mean (pure: no I/O, no OpenTelemetry).

``info`` holds the typed events listeners receive; ``rules`` the one rule set for
RocksDB's lines (``parse_line``); ``tables`` the decoder's bounded memory (live
blob files, jobs); ``decoder`` turns one DB's lines into ``...Info`` values.
"""

from .decoder import LogDecoder
from .info import (
    OK,
    BatchInfo,
    BlobFileCreationInfo,
    BlobFileDeletionInfo,
    CompactionJobInfo,
    FlushJobInfo,
    JobInfo,
    LineSkippedInfo,
    RecoveryJobInfo,
    SessionInfo,
    TableFileCreationInfo,
    TableFileDeletionInfo,
    WatchInfo,
    callback_of,
)
from .rules import LogLine, parse_line

__all__ = [
    "OK",
    "BatchInfo",
    "BlobFileCreationInfo",
    "BlobFileDeletionInfo",
    "CompactionJobInfo",
    "FlushJobInfo",
    "JobInfo",
    "LineSkippedInfo",
    "LogDecoder",
    "LogLine",
    "RecoveryJobInfo",
    "SessionInfo",
    "TableFileCreationInfo",
    "TableFileDeletionInfo",
    "WatchInfo",
    "callback_of",
    "parse_line",
]
