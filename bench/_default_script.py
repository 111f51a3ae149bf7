"""A 0.1 s script: open a DB with default options, one put, close (bench/close_exit.py times it whole)."""

import sys

import rocksdict

db = rocksdict.Rdict(sys.argv[1])
db[b"k"] = b"v"
db.close()
