"""What the ``rocksdb.blob_file.live`` / ``.live.bytes`` up-down counters counted, per blob file.

An up-down counter must take back exactly what it added: a deletion subtracts the
size and uses the attribute set its file was counted with, a file is counted once
however often it is reported, and a second watch of the same DB reconciles with
the directory instead of counting its files again. That needs, per counted file,
what was added: :class:`LiveFiles` keeps it (number -> size, attribute set,
creation time), one table per DB, touched only by that DB's watch, at most
:data:`LIVE_FILES_MAX` files (the decoder's bound: more than any real DB has live);
beyond, the oldest file is taken back from the counters and forgotten (counted in
:attr:`LiveFiles.evicted`), so the counters never drift upwards.

The decoder keeps the LOG's own table and puts size, column family, creation time
and ``known`` on deletions, but that does not say what *this listener* counted: a
creation does not tell that its file was already counted (found by the scan at
start, then logged as created), the decoder's entry takes the creation's column
family and size while the file was counted without them, and a watch resumed from
a checkpoint has the checkpoint's table, not the directory the listener counted.
"""

from __future__ import annotations

from typing import Any

from .metrics import DbMetrics

__all__ = ["LIVE_FILES_MAX", "LiveFiles"]

LIVE_FILES_MAX = 100_000  # ~190 bytes each: 19 MB at worst (a DB with 25 TB of 256 MiB blob files)


class LiveFiles:
    """The blob files one DB's live counters count: number -> [size, attrs, created_ns]."""

    __slots__ = ("_files", "cap", "evicted")

    def __init__(self, cap: int = LIVE_FILES_MAX) -> None:
        self._files: dict[Any, list[Any]] = {}
        self.cap = cap
        self.evicted = 0

    def _bound(self, metrics: DbMetrics) -> None:
        while len(self._files) > self.cap:
            number = next(iter(self._files))  # the first counted: RocksDB numbers files in creation order
            self.deleted(number, self._files[number], metrics)
            self.evicted += 1

    def get(self, number: Any) -> list[Any] | None:
        """[size, attrs, created_ns] of a counted file, or None."""
        return self._files.get(number)

    def created(self, number: Any, size: Any, cf: str | None, event_ns: int | None, metrics: DbMetrics) -> None:
        """A blob file was created: counted unless it already is (found at start, or
        logged twice); a size or creation time learnt now fills in what was unknown."""
        live = self._files.get(number)
        if live is None:
            attrs = metrics.attributes(cf, None)
            self._files[number] = [size, attrs, event_ns]
            metrics.live(attrs, 1, size if type(size) is int else None)
            if len(self._files) > self.cap:
                self._bound(metrics)
            return
        if live[0] is None and type(size) is int:
            live[0] = size
            metrics.live(live[1], None, size)
        if live[2] is None:
            live[2] = event_ns

    def deleted(self, number: Any, live: list[Any], metrics: DbMetrics) -> None:
        """A counted file (``live``: its entry) was deleted: take back what it added."""
        del self._files[number]
        size = live[0]
        metrics.live(live[1], -1, -size if type(size) is int else None)

    def forget_all(self, metrics: DbMetrics) -> None:
        """The database was created afresh at this path: its predecessor's files are gone."""
        self.reconcile({}, metrics)

    def reconcile(self, existing: dict[Any, Any], metrics: DbMetrics) -> None:
        """A watch starts and found ``existing`` (number -> size) in the directory: files
        counted before and gone now are taken back, the others found are counted
        (without a column family: the directory does not say)."""
        attrs = metrics.attributes(None, None)
        files = self._files
        for number in [n for n in files if n not in existing]:
            size, counted_attrs, _ = files.pop(number)
            metrics.live(counted_attrs, -1, -size if type(size) is int else None)
        for number, size in existing.items():
            if number in files:
                continue
            files[number] = [size, attrs, None]
            metrics.live(attrs, 1, size if type(size) is int else None)
        self._bound(metrics)
