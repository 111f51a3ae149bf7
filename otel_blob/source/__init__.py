"""Step 1 of the data's way: where RocksDB's info LOG is and how to read it (stdlib only).

``layout`` knows RocksDB's file names; ``identity`` tells files apart by what they
are; ``reader`` hands out complete lines of one open file; ``follower`` follows a
LOG across rolls, reopens and deletions; ``files`` reads finished files once
(replay); ``notify`` wakes a reader when the LOG changes (inotify).
"""

from .follower import LogFollower
from .layout import WatchError, info_log_path
from .reader import LogProblem

__all__ = ["LogFollower", "LogProblem", "WatchError", "info_log_path"]
