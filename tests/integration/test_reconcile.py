"""No call stays live forever (issue 18; docs/kaphila.md, "The reconciler").

Kaphila posts each event once and twigate can die, time out or lose a
/hangup at any moment. These tests drive the real daemon and simulator over
HTTP, with the official SDK as client and the signature-checking receiver
for callbacks, and wait for events, never for fixed times:

  * kill -9 under load with the built-in simulator (whose calls die with the
    process): after the restart every call is terminal within 30 s and each
    gets exactly one `completed` callback per idempotency token;
  * /hangup answering 500: retried with backoff until it works;
  * /makecall answering after twigate gave up, yet dialling: the call is
    adopted from its events and hung up, never left ringing at Kaphila;
  * a Kaphila call on our key that twigate does not own: hung up."""

import concurrent.futures
import sqlite3
import time

import requests
from twilio.base.exceptions import TwilioRestException

from harness import DEFAULT_FROM, fresh_number, wait_for

LIVE = '<Response><Pause length="60"/></Response>'
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
FAST_RECONCILE = {"kaphila.reconcile_interval_ms": 200, "kaphila.hangup_backoff_ms": 50,
                  "kaphila.orphan_wait_ms": 500}


def statuses(tg, account="a"):
    r = tg.http("GET", tg.account_uri(account) + "/Calls.json", params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    return {c["sid"]: c["status"] for c in r.json()["calls"]}


def completed_tokens(receiver, route):
    """{CallSid: set of idempotency tokens of its final status callback}."""
    out = {}
    for r in receiver.requests(route):
        if "CallDuration" in r.params:   # only the completed callback has it
            out.setdefault(r.params["CallSid"], set()).add(r.header("I-Twilio-Idempotency-Token"))
    return out


def test_kill9_under_load_every_call_ends_once(make_twigate, receiver):
    tg = make_twigate()   # default intervals: the start-up check needs none
    client = tg.client()
    created, stop = [], []

    def create(_):
        if stop:
            return None
        try:
            return client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE,
                                       status_callback=receiver.url("/k9cb"),
                                       status_callback_event=ALL_EVENTS).sid
        except Exception:   # the kill cuts creates in flight: no 201, not owed
            return None

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futs = [pool.submit(create, i) for i in range(400)]
        # Kill while creates are still coming and earlier calls are live,
        # some ringing, some answered and running their TwiML.
        wait_for(lambda: sum(f.done() and f.result() is not None for f in futs) >= 150,
                 timeout=60, message="150 calls created")
        wait_for(lambda: "in-progress" in statuses(tg).values(), timeout=30)
        tg.kill9()
        stop.append(True)
        created = [f.result() for f in futs if f.result()]
    assert len(created) >= 150
    with sqlite3.connect(tg.db_path) as db:
        live = db.execute("SELECT count(*) FROM calls WHERE status IN "
                          "('queued','ringing','in-progress')").fetchone()[0]
    assert live > 0, "the kill should leave live calls behind"

    tg.start()
    t0 = time.monotonic()
    wait_for(lambda: all(statuses(tg).get(s) in TERMINAL for s in created), timeout=30,
             interval=0.2, message="every call terminal after the restart")
    assert time.monotonic() - t0 <= 30
    wait_for(lambda: set(completed_tokens(receiver, "/k9cb")) >= set(created), timeout=30,
             interval=0.2, message="a completed callback for every call")
    toks = completed_tokens(receiver, "/k9cb")
    assert all(len(toks[s]) == 1 for s in created), \
        {s: toks[s] for s in created if len(toks[s]) != 1}
    # The ends twigate did not observe are marked as reconciled.
    assert "reconciled, not observed" in tg.log_text()
