"""Kaphila's events as twigate receives them (docs/kaphila.md): authenticated
by the per-call token only, stored before they are acknowledged, and never
able to move a call backwards or repeat a status callback — whatever
duplicates, late arrivals or garbage Kaphila (or anyone else) sends.
Also the outbound policy for customer URLs (webhook.allow / webhook.deny)."""

import sqlite3
import time

import requests

from harness import DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, fresh_number, wait_for

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def token_of(tg, sid):
    with sqlite3.connect(tg.db_path) as db:
        return db.execute("SELECT token FROM calls WHERE sid = ?", (sid,)).fetchone()[0]


def post_event(tg, token, body, raw=False):
    url = f"{tg.base_url}/kaphila/events/{token}"
    if raw:
        return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=5)
    return requests.post(url, json=body, timeout=5)


def test_replayed_and_late_events_change_nothing(twigate, receiver):
    client = twigate.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/ev"),
                               status_callback_event=ALL_EVENTS)
    done = twigate.wait_for_status(client, call.sid, {"completed"})
    receiver.wait_for_requests("/ev", 4, call_sid=call.sid)
    token = token_of(twigate, call.sid)
    kid = twigate.sim_get(call.sid)["callId"]
    stamp = "2026-01-01T00:00:00.000Z"
    # Everything again, out of order, twice.
    for name in ("call.answered", "call.initiated", "call.ended", "call.answered", "call.ended"):
        body = {"event": name, "callId": kid, "timestamp": stamp, "status": "busy",
                "hangupCause": "17", "wasAnswered": False}
        assert post_event(twigate, token, body).status_code == 200
    time.sleep(0.5)
    after = client.calls(call.sid).fetch()
    assert (after.status, after.duration, after.end_time) == (done.status, done.duration, done.end_time)
    seqs = [r.params["SequenceNumber"] for r in receiver.requests("/ev", call_sid=call.sid)]
    assert sorted(seqs) == ["0", "1", "2", "3"], seqs


def test_early_end_without_answer_skips_nothing_backwards(twigate, receiver):
    """A call.ended that overtakes call.answered: busy is final; a late
    call.answered must not revive the call."""
    client = twigate.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               status_callback=receiver.url("/early"),
                               status_callback_event=ALL_EVENTS)
    token = token_of(twigate, call.sid)
    kid = "early-" + call.sid
    assert post_event(twigate, token, {"event": "call.ended", "callId": kid, "status": "busy",
                                       "hangupCause": "17", "wasAnswered": False}).status_code == 200
    twigate.wait_for_status(client, call.sid, {"busy"})
    assert post_event(twigate, token, {"event": "call.answered", "callId": kid}).status_code == 200
    time.sleep(0.5)
    assert client.calls(call.sid).fetch().status == "busy"
    final = receiver.wait_for_requests("/early", 1, call_sid=call.sid,
                                       predicate=lambda r: r.params["CallStatus"] == "busy")
    assert len(final) == 1
    assert not receiver.requests("/early", call_sid=call.sid,
                                 predicate=lambda r: r.params["CallStatus"] == "in-progress")


def test_unknown_token_is_404_and_changes_nothing(twigate):
    r = post_event(twigate, "not-a-token", {"event": "call.ended", "callId": "x"})
    assert r.status_code == 404
    with sqlite3.connect(twigate.db_path) as db:
        n = db.execute("SELECT count(*) FROM kevents WHERE body LIKE '%not-a-token%'").fetchone()[0]
    assert n == 0


def test_unknown_events_are_kept_and_garbage_refused(twigate):
    client = twigate.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, {"in-progress"})
    token = token_of(twigate, call.sid)
    r = post_event(twigate, token, {"event": "call.teleported", "callId": "x", "where": "moon"})
    assert r.status_code == 200
    with sqlite3.connect(twigate.db_path) as db:
        stored = db.execute("SELECT body FROM kevents WHERE call_sid = ? AND body LIKE '%teleported%'",
                            (call.sid,)).fetchall()
    assert len(stored) == 1 and '"moon"' in stored[0][0]
    for body in (b"not json", b"[1,2]", b'{"no_event": 1}', b'{"event": 5}'):
        assert post_event(twigate, token, body, raw=True).status_code == 400, body
    assert client.calls(call.sid).fetch().status == "in-progress"
    client.calls(call.sid).update(status="completed")


def test_webhook_deny_policy_blocks_and_reports(make_twigate, receiver):
    tg = make_twigate(overrides={"webhook.deny": "127.0.0.0/8"})
    client = tg.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/denied"))
    tg.wait_for_status(client, call.sid, {"completed"})
    notes = wait_for(lambda: [n for n in client.calls(call.sid).notifications.list()
                              if n.error_code == "11200"], 10,
                     message="no 11200 notification for the refused destination")
    assert "policy" in client.calls(call.sid).notifications(notes[0].sid).fetch().message_text
    assert not receiver.requests("/denied"), "a denied destination was contacted"


def test_webhook_allow_policy(make_twigate, receiver):
    # An allow list without loopback refuses the receiver…
    tg = make_twigate(overrides={"webhook.allow": "10.0.0.0/8, example.com"})
    client = tg.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/notallowed"))
    tg.wait_for_status(client, call.sid, {"completed"})
    wait_for(lambda: any(n.error_code == "11200"
                         for n in client.calls(call.sid).notifications.list()), 10)
    assert not receiver.requests("/notallowed")
    # …and one that names it lets the callback through.
    tg2 = make_twigate(overrides={"webhook.allow": "10.0.0.0/8,127.0.0.1"})
    c2 = tg2.client()
    call2 = c2.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                            status_callback=receiver.url("/allowed"))
    tg2.wait_for_status(c2, call2.sid, {"completed"})
    receiver.wait_for_requests("/allowed", 1, call_sid=call2.sid)
