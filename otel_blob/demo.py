"""``python -m otel_blob.demo``: the demo of the README (the same as ``otel-blob demo``)."""

import sys

if __name__ == "__main__":
    from .cli.main import main

    sys.exit(main(["demo", *sys.argv[1:]]))
