"""Kaphila's events as twigate receives them (docs/kaphila.md): authenticated
by the per-call token only, stored before they are acknowledged, and never
able to move a call backwards or repeat a status callback — whatever
duplicates, late arrivals or garbage Kaphila (or anyone else) sends.
Also the outbound policy for customer URLs (webhook.allow / webhook.deny)."""

from concurrent.futures import ThreadPoolExecutor

import requests

from harness import (DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, fresh_number, outbox_drained,
                     wait_for)
from harness import db

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def token_of(tg, sid):
    return db.one(tg, "SELECT token FROM calls WHERE sid = ?", (sid,))[0]


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
    # Each 200 left after its batch committed; the barrier is that every
    # callback those commits wrote has been delivered.
    outbox_drained(twigate)
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
    outbox_drained(twigate)     # the 200 followed the commit; and its callbacks are done
    assert client.calls(call.sid).fetch().status == "busy"
    final = receiver.wait_for_requests("/early", 1, call_sid=call.sid,
                                       predicate=lambda r: r.params["CallStatus"] == "busy")
    assert len(final) == 1
    assert not receiver.requests("/early", call_sid=call.sid,
                                 predicate=lambda r: r.params["CallStatus"] == "in-progress")


def test_unknown_token_is_404_and_changes_nothing(twigate):
    r = post_event(twigate, "not-a-token", {"event": "call.ended", "callId": "x"})
    assert r.status_code == 404
    assert db.one(twigate, "SELECT count(*) FROM kevents WHERE body LIKE '%not-a-token%'") == (0,)


def test_unknown_events_are_kept_and_garbage_refused(twigate):
    client = twigate.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, {"in-progress"})
    token = token_of(twigate, call.sid)
    r = post_event(twigate, token, {"event": "call.teleported", "callId": "x", "where": "moon"})
    assert r.status_code == 200
    stored = db.rows(twigate, "SELECT body FROM kevents WHERE call_sid = ? AND body LIKE '%teleported%'",
                     (call.sid,))
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


# ------------------------------------------------- acknowledged = committed

# The built-in simulator rings after 10 minutes: only the events the test
# posts move these calls.
QUIET_SIM = {"sim.fast": False, "sim.ring_ms": 600000, "sim.answer_ms": 600000}


def _quiet_call(tg, client, receiver, route):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               status_callback=receiver.url(route),
                               status_callback_event=ALL_EVENTS)
    assert client.calls(call.sid).fetch().status == "queued"
    return call, token_of(tg, call.sid)


def test_unknown_tokens_are_404_and_change_nothing(twigate):
    """Tokens of the right shape that name no call, and strings that cannot
    be tokens, are refused alike, whatever the body."""
    before = twigate.client().calls.list(limit=1000)
    for token in ("A" * 43, "x" * 43 + "y", "not.a.token", "a" * 200):
        r = post_event(twigate, token, {"event": "call.ended", "callId": "nobody-404"})
        assert r.status_code == 404, (token, r.status_code, r.text)
    assert db.one(twigate, "SELECT count(*) FROM kevents WHERE body LIKE '%nobody-404%'") == (0,)
    after = twigate.client().calls.list(limit=1000)
    assert [(c.sid, c.status) for c in after] == [(c.sid, c.status) for c in before]


def test_event_effects_are_committed_when_acknowledged(make_twigate, receiver):
    """Kaphila's 200 leaves only after the transaction holding the event's
    effects has committed: a read right after each 200 already sees them,
    however many events are in flight (8 calls at once)."""
    tg = make_twigate(overrides=QUIET_SIM)
    client = tg.client()
    calls = [_quiet_call(tg, client, receiver, "/acked") for _ in range(24)]

    def walk(call_token):
        call, token = call_token
        kid = "acked-" + call.sid
        seen = []
        for body in ({"event": "call.initiated", "callId": kid},
                     {"event": "call.answered", "callId": kid},
                     {"event": "call.ended", "callId": kid, "wasAnswered": True, "callDuration": 7}):
            assert post_event(tg, token, body).status_code == 200
            seen.append(db.one(tg, "SELECT status FROM calls WHERE sid = ?", (call.sid,))[0])
        # the ended call's token still reaches it (late recording events)
        assert post_event(tg, token, {"event": "recording.completed", "callId": kid,
                                      "recordingId": "r1"}).status_code == 200
        return seen

    with ThreadPoolExecutor(8) as pool:
        for seen in pool.map(walk, calls):
            assert seen == ["ringing", "in-progress", "completed"], seen
    for call, _ in calls:
        assert client.calls(call.sid).fetch().duration == "7"
        seqs = [r.params["SequenceNumber"] for r in
                receiver.wait_for_requests("/acked", 4, call_sid=call.sid)]
        assert sorted(seqs) == ["0", "1", "2", "3"], seqs


def test_acknowledged_event_survives_kill9(make_twigate, receiver):
    """kill -9 right after the 200: the event's effects and the status
    callbacks it owes are in the database, and go out after the restart."""
    tg = make_twigate(overrides=QUIET_SIM)
    client = tg.client()
    receiver.set("/k9", delay=5)   # nothing delivered before the kill
    call, token = _quiet_call(tg, client, receiver, "/k9")
    kid = "k9-" + call.sid
    assert post_event(tg, token, {"event": "call.initiated", "callId": kid}).status_code == 200
    assert post_event(tg, token, {"event": "call.ended", "callId": kid, "status": "busy",
                                  "hangupCause": "17", "wasAnswered": False}).status_code == 200
    tg.kill9()
    status, end_time = db.one(tg, "SELECT status, end_time FROM calls WHERE sid = ?", (call.sid,))
    owed = db.rows(tg, "SELECT params FROM outbox WHERE call_sid = ? ORDER BY seq", (call.sid,))
    assert status == "busy" and end_time > 0
    assert [("CallStatus=busy" in p[0]) for p in owed] == [False, False, True], owed
    receiver.set("/k9", delay=0)
    tg.start()
    final = receiver.wait_for_requests("/k9", 1, timeout=20, call_sid=call.sid,
                                       predicate=lambda r: r.params["CallStatus"] == "busy")
    assert final[0].params["SequenceNumber"] == "2"
    assert client.calls(call.sid).fetch().status == "busy"


def test_stored_pending_event_is_replayed_at_start(make_twigate, receiver):
    """A raw event left pending (kept when its batch could not commit) is
    applied at the next start, in order, like a live one."""
    tg = make_twigate(overrides=QUIET_SIM)
    client = tg.client()
    call, _ = _quiet_call(tg, client, receiver, "/replay")
    tg.stop()
    for ev in ('{"event":"call.initiated","callId":"rp"}',
               '{"event":"call.ended","callId":"rp","status":"no-answer","hangupCause":"19"}'):
        db.execute(tg, "INSERT INTO kevents(call_sid, received_at, body) VALUES(?, 0, ?)",
                   (call.sid, ev))
    tg.start()
    assert tg.wait_for_status(client, call.sid, {"no-answer"}).status == "no-answer"
    receiver.wait_for_requests("/replay", 1, call_sid=call.sid,
                               predicate=lambda r: r.params["CallStatus"] == "no-answer")
    got = receiver.requests("/replay", call_sid=call.sid)
    # Delivery is at least once: a callback in flight when tg.stop() came
    # may arrive twice, with the same SequenceNumber and idempotency token.
    by_seq = {}
    for r in got:
        first = by_seq.setdefault(r.params["SequenceNumber"], r)
        assert first.params == r.params
        assert first.header("I-Twilio-Idempotency-Token") == r.header("I-Twilio-Idempotency-Token")
    assert [by_seq[k].params["CallStatus"] for k in sorted(by_seq, key=int)] \
        == ["initiated", "ringing", "no-answer"]
    assert db.one(tg, "SELECT count(*) FROM kevents WHERE done = 0") == (0,)


def test_event_whose_batch_fails_is_kept_or_refused(make_twigate, receiver, tmp_path, accounts):
    """Fault injection with triggers (SQLite's RAISE, a PL/pgSQL function's
    RAISE EXCEPTION on PostgreSQL). When the transaction holding an
    event's effects fails, the raw event is stored for replay and Kaphila
    still gets its 200; when even that cannot be stored, Kaphila gets a 503
    (and keeps the event) — never a 200 for something not durable. The
    standalone simulator keeps the calls alive across the restart (with the
    built-in one they would die with twigate and be reconciled)."""
    from harness import KaphilaSim
    sim = KaphilaSim(tmp_path / "sim", [a.kaphila_key for a in accounts.values()], fast=False,
                     extra_args=["--ring-ms", "600000", "--answer-ms", "600000"]).start()
    try:
        _batch_fault(make_twigate(external_sim=sim), receiver)
    finally:
        sim.stop()


def _inject(tg, name, when, cond=None):
    """A trigger `name` that fails every statement it fires on (when cond)."""
    if db.is_pg(tg):
        db.execute(tg, "CREATE OR REPLACE FUNCTION inj_abort() RETURNS trigger LANGUAGE plpgsql"
                       " AS $$BEGIN RAISE EXCEPTION 'injected'; END$$")
        db.execute(tg, f"CREATE TRIGGER {name} {when} FOR EACH ROW"
                       + (f" WHEN ({cond})" if cond else "") + " EXECUTE FUNCTION inj_abort()")
    else:
        db.execute(tg, f"CREATE TRIGGER {name} {when}" + (f" WHEN {cond}" if cond else "")
                       + " BEGIN SELECT RAISE(ABORT, 'injected'); END")


def _batch_fault(tg, receiver):
    client = tg.client()
    (a, ta), (b, tb) = [_quiet_call(tg, client, receiver, "/inj") for _ in range(2)]
    busy = {"event": "call.ended", "callId": "inj", "status": "busy", "hangupCause": "17"}

    def dialled():
        """Both calls' Kaphila ids are committed. Until then b's id could ride
        in the batch that a's fault rolls back, and a restart would take b for
        a call twigate never heard back about (failed), which is another test."""
        return all(db.one(tg, "SELECT kaphila_id FROM calls WHERE sid = ?", (c.sid,))[0]
                   for c in (a, b))
    wait_for(dialled, timeout=10, message="the calls' /makecall answers were never committed")
    _inject(tg, "inj_calls", "BEFORE UPDATE OF status ON calls", "NEW.status = 'busy'")
    assert post_event(tg, ta, busy).status_code == 200
    assert db.one(tg, "SELECT status FROM calls WHERE sid = ?", (a.sid,)) == ("queued",)
    pending = db.rows(tg, "SELECT body FROM kevents WHERE call_sid = ? AND done = 0", (a.sid,))
    assert len(pending) == 1 and '"busy"' in pending[0][0], pending
    _inject(tg, "inj_kevents", "BEFORE INSERT ON kevents")
    r = post_event(tg, tb, busy)
    assert r.status_code == 503, (r.status_code, r.text)
    for name, table in (("inj_calls", "calls"), ("inj_kevents", "kevents")):
        db.execute(tg, f"DROP TRIGGER {name} ON {table}" if db.is_pg(tg) else f"DROP TRIGGER {name}")
    tg.restart()
    # a: replayed from the stored event; b: Kaphila's retry is taken now.
    assert tg.wait_for_status(client, a.sid, {"busy"}).status == "busy"
    assert client.calls(b.sid).fetch().status == "queued"
    assert post_event(tg, tb, busy).status_code == 200
    assert client.calls(b.sid).fetch().status == "busy"
    for c in (a, b):
        receiver.wait_for_requests("/inj", 1, call_sid=c.sid,
                                   predicate=lambda r: r.params["CallStatus"] == "busy")
