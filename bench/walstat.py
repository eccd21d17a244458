#!/usr/bin/python3
"""walstat — what a twigate database's write-ahead log is made of.

    bench/walstat.py DB [CALLS]

Reads DB-wal's frame headers (SQLite's WAL format: a 32-byte file header, then
frames of a 24-byte header and one page) and counts frames, commits (frames
whose "database size after commit" field is set) and frames per B-tree. Pages
are mapped to tables and indexes with the dbstat virtual table, read from a
copy of DB and DB-wal so the live files are never opened by a second process.
CALLS, when given, turns counts into frames per call.

Use it on a database written while checkpoints were held off (a copy taken
during the run, or after killing twigate with SIGKILL), or the WAL holds only
what the last checkpoint left. Not part of twigate.
"""
import collections
import os
import shutil
import sqlite3
import struct
import sys
import tempfile


def frames(wal_path):
    """(page size, [(page number, commit field)]) of the frames of the WAL's
    current generation: a frame whose salt differs is left over from before
    the WAL last restarted."""
    out = []
    with open(wal_path, "rb") as f:
        head = f.read(32)
        if len(head) < 32 or struct.unpack(">I", head[:4])[0] not in (0x377F0682, 0x377F0683):
            sys.exit("walstat: %s is not a WAL file" % wal_path)
        page_size = struct.unpack(">I", head[8:12])[0]
        salt = head[16:24]
        while True:
            fh = f.read(24)
            if len(fh) < 24 or fh[8:16] != salt:
                return page_size, out
            out.append(struct.unpack(">II", fh[:8]))
            f.seek(page_size, os.SEEK_CUR)


def owners(db_path, wal_path):
    with tempfile.TemporaryDirectory() as d:
        copy = os.path.join(d, "copy.db")
        shutil.copy(db_path, copy)
        shutil.copy(wal_path, copy + "-wal")
        con = sqlite3.connect(copy)
        try:
            return {pg: name for name, pg in con.execute("SELECT name, pageno FROM dbstat")}
        finally:
            con.close()


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    db = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) == 3 else 0
    wal = db + "-wal"
    page_size, fr = frames(wal)
    pages = [p for p, _ in fr]
    commits = sum(1 for _, c in fr if c)
    if not pages:
        print("no frames in %s" % wal)
        return
    size = len(pages) * (24 + page_size)
    own = owners(db, wal)
    print("%d frames, %d commits, %.1f frames per commit, %.1f MB of WAL"
          % (len(pages), commits, len(pages) / max(commits, 1), size / 1e6))
    if calls:
        print("per call: %.1f frames, %.2f commits, %.1f KB" %
              (len(pages) / calls, commits / calls, size / 1e3 / calls))
    by = collections.Counter(own.get(p, "page %d" % p if p == 1 else "?") for p in pages)
    for name, n in by.most_common():
        print("%7d  %5.1f %%  %s" % (n, 100.0 * n / len(pages), name))


if __name__ == "__main__":
    main()
