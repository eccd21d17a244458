"""Storage faults are visible and survivable (issue 18).

  * disk full, on a small tmpfs holding the database: /readyz answers 503
    and /metrics counts the refused writes while the disk is full; once
    space is back the daemon is ready again and every call that got a 201
    before the fault reaches a terminal status with exactly one
    `completed` callback per idempotency token;
  * a database with corrupt pages: the start-up integrity check
    (PRAGMA quick_check) fails and /readyz says so;
  * a database another process keeps locked: the engine's commit waits in
    SQLite's busy handler, one loop turn past limits.engine_stall_ms, and
    /healthz answers 503 until the engine turns again (the liveness check a
    supervisor restarts on).

The tmpfs needs root (CAP_SYS_ADMIN); without it the test is skipped with
the reason."""

import os
import sqlite3
import subprocess
import threading

import pytest
import requests

from harness import DEFAULT_FROM, fresh_number, wait_for
from harness.barriers import metric_value
from harness.db import sqlite_only
from harness.ops import wait_log

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full test: {r.stderr.strip()}")
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def readyz(tg):
    return requests.get(tg.base_url + "/readyz", timeout=5)


def metric(tg, name, labels):
    text = requests.get(tg.base_url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def statuses(tg):
    r = tg.http("GET", tg.account_uri() + "/Calls.json", params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    return {c["sid"]: c["status"] for c in r.json()["calls"]}


def fill(path):
    """Writes zeros into path until the filesystem is full. Unbuffered: a
    buffered file's close() flushes the bytes of the last partial write
    again and raises ENOSPC, depending on how much room was left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


@sqlite_only("the full disk is a tmpfs under the SQLite file; PostgreSQL's disk is the "
             "server's (test_pg_daemon.py cuts its sessions instead)")
def test_disk_full_is_not_ready_and_calls_progress_after(tmpfs, make_twigate, receiver):
    # The first sweeps run while the disk is full; small intervals make
    # the end quick once it is not.
    tg = make_twigate(overrides={
        "db.path": os.path.join(tmpfs, "twigate.db"),
        "sim.fast": False, "sim.ring_ms": 1500, "sim.answer_ms": 1000,
        "kaphila.reconcile_interval_ms": 200, "kaphila.reconcile_quiet_ms": 2000,
    })
    client = tg.client()
    # Ready once the first Kaphila health probe has answered (a moment after
    # start under load); the database must be writable by then.
    wait_for(lambda: readyz(tg).status_code == 200, timeout=10,
             message="/readyz never became ready before the fault")
    sids = [client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                twiml='<Response><Pause length="1"/></Response>',
                                status_callback=receiver.url("/full")).sid
            for _ in range(10)]
    # Make every later write need new blocks, then take them all.
    with sqlite3.connect(tg.db_path, timeout=5) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = os.path.join(tmpfs, "filler")
    fill(filler)
    # A write may first reuse blocks the WAL already has (the truncation
    # above is skipped while a reader is in the way), so keep asking for
    # writes — a create each poll, refused or not — until one needs a block.
    def full_seen():
        try:
            client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                twiml="<Response><Hangup/></Response>")
        except Exception:  # refused while the disk is full: that is the point
            pass
        return readyz(tg).status_code == 503
    wait_for(full_seen, timeout=20, message="/readyz never failed while the disk was full")
    assert "not writable" in readyz(tg).text
    assert metric(tg, "twigate_storage_errors_total", 'kind="full"') > 0
    # Kaphila's events for the calls come (and are refused) while it is full.
    wait_for(lambda: all(tg.sim_get(s)["status"] != "ringing" for s in sids), timeout=20)
    os.unlink(filler)
    wait_for(lambda: readyz(tg).status_code == 200, timeout=20,
             message="/readyz never recovered once space came back")
    wait_for(lambda: all(statuses(tg).get(s) in TERMINAL for s in sids), timeout=30,
             interval=0.2, message="calls accepted before the fault never ended")
    wait_for(lambda: all(receiver.requests("/full", call_sid=s,
                                           predicate=lambda r: "CallDuration" in r.params)
                         for s in sids), timeout=30, message="a completed callback per call")
    for s in sids:
        toks = {r.header("I-Twilio-Idempotency-Token") for r in
                receiver.requests("/full", call_sid=s,
                                  predicate=lambda r: "CallDuration" in r.params)}
        assert len(toks) == 1, (s, toks)


@sqlite_only("it scribbles over a page of the SQLite file and expects PRAGMA quick_check "
             "to find it; PostgreSQL's pages are the server's")
def test_corrupt_database_is_not_ready(make_twigate):
    tg = make_twigate()
    client = tg.client()
    for _ in range(3):
        client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                            twiml="<Response><Hangup/></Response>")
    tg.end_live_calls()
    tg.stop()
    # Scribble over an index page: the header stays readable, so twigate
    # starts, but quick_check finds the damage.
    with sqlite3.connect(tg.db_path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE type='index' "
                          "AND tbl_name='calls' LIMIT 1").fetchone()[0]
        page = db.execute("PRAGMA page_size").fetchone()[0]
    with open(tg.db_path, "r+b") as f:
        f.seek((root - 1) * page + 8)
        f.write(b"\xff" * 64)
    tg.start()
    r = readyz(tg)
    assert r.status_code == 503 and "integrity" in r.text, (r.status_code, r.text)
    assert "integrity check failed" in tg.log_text()
    assert tg.healthz().status_code == 200   # alive, just not ready


@sqlite_only("it holds SQLite's write lock from another process; PostgreSQL's locks are "
             "the server's")
def test_an_engine_stuck_in_one_turn_fails_healthz_until_it_turns_again(make_twigate):
    """Another process takes the database's write lock (BEGIN IMMEDIATE) and a
    create comes: the engine's write waits in SQLite's busy handler, 5 s a
    try, so its loop stays in one turn past limits.engine_stall_ms (1 s
    here). /healthz answers 503 "engine stalled" meanwhile and the log says
    so once; when the lock goes, /healthz is 200 again, the log says the
    loop turns again, and /metrics counts the stall."""
    tg = make_twigate(overrides={"limits.engine_stall_ms": 1000})
    assert tg.healthz().status_code == 200
    acct = tg.accounts["a"]
    lock = sqlite3.connect(tg.db_path, timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    answers = []

    def create():
        try:
            answers.append(requests.post(
                tg.base_url + tg.account_uri() + "/Calls.json", auth=(acct.sid, acct.auth_token),
                data={"To": fresh_number(), "From": DEFAULT_FROM,
                      "Twiml": "<Response><Hangup/></Response>"}, timeout=60).status_code)
        except requests.RequestException as e:
            answers.append(repr(e))

    t = threading.Thread(target=create)
    t.start()
    try:
        # (a tuple: a requests.Response for a 503 is falsy)
        stalled = wait_for(lambda: (lambda r: (r.status_code, r.text) if r.status_code == 503
                                    else None)(tg.healthz()),
                           timeout=10, message="/healthz never answered 503 while the engine waited")
        assert stalled == (503, "engine stalled\n"), stalled
        wait_log(tg, r"engine's loop has been in one turn for \d+ ms \(limits\.engine_stall_ms = 1000\)")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for(lambda: tg.healthz().status_code == 200, timeout=15,
             message="/healthz stayed 503 after the lock was released")
    wait_log(tg, r"engine's loop turns again after a turn of at least \d+ ms")
    t.join(timeout=60)
    assert answers, "the create never got an answer"
    assert metric_value(tg, "twigate_engine_stalls_total") >= 1
