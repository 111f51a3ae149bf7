"""A minimal independent LOG reader: when did each blob file event line become readable?

Plain Python, stdlib only, nothing shared with otel_blob. Opens the LOG once (the
benchmark's DB never rolls it), reads it to its end every ``interval`` seconds
(default 1 ms) with ``os.read``, and for every complete ``EVENT_LOG_v1`` line of a
``blob_file_creation`` / ``blob_file_deletion`` records the ``time.time_ns()`` of
the read that completed it::

    python -m bench._logreader LOG_PATH [INTERVAL]

Prints ``{"ready": true}`` once the file is open, then waits; on ``stop`` (or end
of file) on stdin it reads the LOG a last time and prints one JSON object:
``{"records": [[event_name, file_number, time_micros, readable_ns], ...], ...}``.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

MARK = b"EVENT_LOG_v1 "
NAMES = {"blob_file_creation": "rocksdb.blob_file.created", "blob_file_deletion": "rocksdb.blob_file.deleted"}


def main() -> None:
    path = sys.argv[1]
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.001
    fd = os.open(path, os.O_RDONLY)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    records: list[list] = []
    tail = b""
    reads = polls = 0
    stop = False
    while True:
        while True:
            data = os.read(fd, 1 << 20)
            polls += 1
            if not data:
                break
            now = time.time_ns()  # first thing after the read: when these bytes were readable
            reads += 1
            data = tail + data
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            for line in data[:cut].split(b"\n"):
                i = line.find(MARK)
                if i < 0 or b'"blob_file_' not in line:
                    continue
                try:
                    ev = json.loads(line[i + len(MARK):])
                except ValueError:
                    continue
                name = NAMES.get(ev.get("event"))
                if name is not None:
                    records.append([name, ev.get("file_number"), ev.get("time_micros"), now])
        if stop:
            break
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready:
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                stop = True
    os.close(fd)
    t = os.times()
    sys.stdout.write(json.dumps({"records": records, "reads": reads, "polls": polls,
                                 "cpu_s": round(t.user + t.system, 3)}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
