"""Webhooks twigate sends to the customer (contract §8, §9, §10): status
callbacks, the voice Url request, signatures, idempotency tokens, connection
overrides and retries, failure notifications, and durability across kill -9.

Every request is checked by the receiver with twilio-python's own
RequestValidator; each test also asserts it explicitly."""

import time

import pytest
import requests

from harness import (outbox_drained, DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, assert_list_envelope,
                     assert_matches_schema, response_schema, assert_rfc2822, free_port, fresh_number,
                     wait_for)

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
EVENT_STATUS = ["initiated", "ringing", "in-progress", "completed"]
GEO = [f"{who}{what}" for who in ("From", "To", "Caller", "Called")
       for what in ("City", "State", "Zip", "Country")]
NOTIFS = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Notifications.json"


@pytest.fixture(scope="module")
def slow_ring(make_twigate_module):
    return make_twigate_module(overrides={"sim.answer_ms": 40000})


def assert_standard_params(req, call_sid, account_sid, to, from_):
    """Contract §8.1: the parameter set on every voice request/callback."""
    p = req.params
    assert p.get("CallSid") == call_sid, p
    assert p.get("AccountSid") == account_sid, p
    assert p.get("To") == to and p.get("Called") == to, p
    assert p.get("From") == from_ and p.get("Caller") == from_, p
    assert p.get("ApiVersion") == "2010-04-01", p
    assert p.get("Direction") == "outbound-api", p
    missing = [k for k in GEO if k not in p]
    assert not missing, f"geo parameters missing (send empty strings): {missing}"
    assert not req.duplicate_keys, f"duplicate parameter names {req.duplicate_keys}"


def assert_webhook_headers(req):
    assert req.header("User-Agent") == "TwilioProxy/1.1", req.headers
    assert req.header("I-Twilio-Idempotency-Token"), req.headers
    assert req.signature, "no X-Twilio-Signature"
    assert req.valid, f"signature does not validate: {req.method} {req.url} {req.params}"
    assert req.header("Accept") == "*/*", req.headers             # contract §13.10
    if req.method == "POST":
        ctype = req.header("Content-Type", "").lower().replace(" ", "")
        assert ctype == "application/x-www-form-urlencoded;charset=utf-8", ctype


def by_seq(reqs):
    return sorted(reqs, key=lambda r: int(r.params["SequenceNumber"]))


# ---------------------------------------------------------- status callbacks

def test_status_callbacks_for_all_events(twigate, client, receiver):
    receiver.set("/voice", SHORT_TWIML)
    acct = twigate.accounts["a"]
    to = fresh_number()
    call = client.calls.create(to=to, from_=DEFAULT_FROM, url=receiver.url("/voice"),
                               status_callback=receiver.url("/status"),
                               status_callback_event=ALL_EVENTS)
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    got = by_seq(receiver.wait_for_requests("/status", 4, call_sid=call.sid))
    outbox_drained(twigate)         # barrier: every callback of the ended call is done
    assert len(receiver.requests("/status", call_sid=call.sid)) == 4, "extra callbacks"

    assert [r.params["SequenceNumber"] for r in got] == ["0", "1", "2", "3"]
    assert [r.params["CallStatus"] for r in got] == EVENT_STATUS
    tokens = set()
    stamps = []
    for r in got:
        assert r.method == "POST"
        assert_webhook_headers(r)
        assert r.signed_by == acct.sid
        assert_standard_params(r, call.sid, acct.sid, to, DEFAULT_FROM)
        assert r.params["CallbackSource"] == "call-progress-events"
        stamps.append(assert_rfc2822(r.params["Timestamp"], "Timestamp"))
        tokens.add(r.header("I-Twilio-Idempotency-Token"))
    assert len(tokens) == 4, "each webhook needs its own idempotency token"
    assert stamps == sorted(stamps)

    last = got[-1].params
    for k in ("CallDuration", "Duration", "SipResponseCode"):
        assert k in last and last[k].isdigit(), (k, last)
    assert last["CallDuration"] == done.duration
    for r in got[:-1]:
        assert "CallDuration" not in r.params, r.params
    receiver.assert_all_valid()


def test_only_completed_without_status_callback_event(twigate, client, receiver):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/only"))
    twigate.wait_for_status(client, call.sid, TERMINAL)
    receiver.wait_for_requests("/only", 1, call_sid=call.sid)
    outbox_drained(twigate)         # barrier: every callback of the ended call is done
    got = receiver.requests("/only", call_sid=call.sid)
    assert [r.params["CallStatus"] for r in got] == ["completed"]
    assert_webhook_headers(got[0])
    assert got[0].params["CallbackSource"] == "call-progress-events"
    assert "SequenceNumber" in got[0].params


@pytest.mark.parametrize("suffix,status", [
    ("0001", "busy"), ("0002", "no-answer"), ("0003", "failed")])
def test_unanswered_calls_send_completed_event(twigate, client, receiver, suffix, status):
    to = fresh_number(suffix)
    call = client.calls.create(to=to, from_=DEFAULT_FROM, twiml=SHORT_TWIML, timeout=10,
                               status_callback=receiver.url("/end"),
                               status_callback_event=["completed"])
    twigate.wait_for_status(client, call.sid, TERMINAL, timeout=15)
    got = receiver.wait_for_requests("/end", 1, call_sid=call.sid)
    outbox_drained(twigate)         # barrier: every callback of the ended call is done
    got = receiver.requests("/end", call_sid=call.sid)
    assert len(got) == 1
    p = got[0].params
    assert p["CallStatus"] == status
    assert p["CallDuration"] == "0" and p["Duration"] == "0", p
    assert p["SipResponseCode"].isdigit(), p
    assert_webhook_headers(got[0])
    assert_standard_params(got[0], call.sid, twigate.accounts["a"].sid, to, DEFAULT_FROM)


def test_canceled_call_sends_completed_event(slow_ring, receiver):
    client = slow_ring.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                               status_callback=receiver.url("/cancel"),
                               status_callback_event=ALL_EVENTS)
    slow_ring.wait_for_status(client, call.sid, "ringing", timeout=5)
    client.calls(call.sid).update(status="canceled")
    slow_ring.wait_for_status(client, call.sid, "canceled", timeout=5)
    got = wait_for(lambda: [r for r in receiver.requests("/cancel", call_sid=call.sid)
                            if r.params["CallStatus"] == "canceled"], 5,
                   message="no canceled callback")
    assert len(got) == 1
    statuses = [r.params["CallStatus"] for r in by_seq(receiver.requests("/cancel"))]
    assert statuses == ["initiated", "ringing", "canceled"], statuses
    receiver.assert_all_valid()


def test_status_callback_method_get(twigate, client, receiver):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/get-cb?existing=1"),
                               status_callback_method="GET",
                               status_callback_event=["initiated", "completed"])
    twigate.wait_for_status(client, call.sid, TERMINAL)
    got = by_seq(receiver.wait_for_requests("/get-cb", 2, call_sid=call.sid))
    for r in got:
        assert r.method == "GET"
        assert r.form == {} and r.body == b""
        assert r.path.startswith("/get-cb?existing=1&"), r.path
        assert r.query["existing"] == ["1"]
        assert_webhook_headers(r)            # signature over the URL with its query
    assert [r.params["CallStatus"] for r in got] == ["initiated", "completed"]


# --------------------------------------------------------- voice Url request

def test_voice_url_request(twigate, client, receiver):
    receiver.set("/answer", SHORT_TWIML)
    acct = twigate.accounts["a"]
    to = fresh_number()
    call = client.calls.create(to=to, from_=DEFAULT_FROM, url=receiver.url("/answer"))
    twigate.wait_for_status(client, call.sid, TERMINAL)
    got = receiver.wait_for_requests("/answer", 1, call_sid=call.sid)
    r = got[0]
    assert r.method == "POST"
    assert_webhook_headers(r)
    assert_standard_params(r, call.sid, acct.sid, to, DEFAULT_FROM)
    assert r.params["CallStatus"] == "in-progress"
    assert "AnsweredBy" not in r.params          # no AMD requested
    assert len(got) == 1


def test_voice_url_with_method_get(twigate, client, receiver):
    receiver.set("/answer-get", SHORT_TWIML)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                               url=receiver.url("/answer-get?app=7"), method="GET")
    twigate.wait_for_status(client, call.sid, TERMINAL)
    r = receiver.wait_for_requests("/answer-get", 1, call_sid=call.sid)[0]
    assert r.method == "GET"
    assert r.query["app"] == ["7"] and r.params["CallStatus"] == "in-progress"
    assert_webhook_headers(r)


@pytest.mark.parametrize("suffix,answered_by", [("0004", "machine_start"), (None, "human")])
def test_voice_url_carries_answered_by(twigate, client, receiver, suffix, answered_by):
    receiver.set("/amd", SHORT_TWIML)
    call = client.calls.create(to=fresh_number(suffix), from_=DEFAULT_FROM,
                               url=receiver.url("/amd"), machine_detection="Enable")
    twigate.wait_for_status(client, call.sid, TERMINAL)
    r = receiver.wait_for_requests("/amd", 1, call_sid=call.sid)[0]
    assert r.params.get("AnsweredBy") == answered_by, r.params
    assert r.params.get("MachineDetectionDuration", "").isdigit(), r.params
    assert_webhook_headers(r)


# -------------------------------------------------- retries and idempotency

def test_fragment_overrides_retry_on_5xx(twigate, client, receiver):
    receiver.set("/flaky", fail_times=2, fail_with=500)
    url = receiver.url("/flaky") + "#rc=3&rp=5xx"
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=url)
    twigate.wait_for_status(client, call.sid, TERMINAL)
    got = receiver.wait_for_requests("/flaky", 3, call_sid=call.sid, timeout=15)
    outbox_drained(twigate)         # barrier: delivered, so no retry is pending
    got = receiver.requests("/flaky", call_sid=call.sid)
    assert len(got) == 3, "delivered on the 3rd try, then no more"
    tokens = {r.header("I-Twilio-Idempotency-Token") for r in got}
    assert len(tokens) == 1 and None not in tokens, tokens
    for r in got:
        assert "#" not in r.path and "rc=" not in r.path and "rp=" not in r.path, r.path
        assert r.params["CallStatus"] == "completed"
        assert_webhook_headers(r)       # signed over the URL without the fragment
    assert len({r.params["SequenceNumber"] for r in got}) == 1


def test_5xx_is_not_retried_by_default(twigate, client, receiver):
    receiver.set("/fails", status=500, twiml="oops", content_type="text/plain")
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/fails"))
    twigate.wait_for_status(client, call.sid, TERMINAL)
    receiver.wait_for_requests("/fails", 1, call_sid=call.sid)
    outbox_drained(twigate)         # barrier: given up, so no retry is pending
    assert len(receiver.requests("/fails", call_sid=call.sid)) == 1


def test_hanging_receiver_does_not_slow_rest(twigate, client, receiver):
    receiver.set("/hang", delay=4)
    receiver.set("/hang-cb", delay=4)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                               url=receiver.url("/hang"), status_callback=receiver.url("/hang-cb"),
                               status_callback_event=ALL_EVENTS)
    receiver.wait_for_requests("/hang", 1, call_sid=call.sid)
    base = twigate.account_uri()
    ops = [
        ("fetch", lambda: client.calls(call.sid).fetch()),
        ("list", lambda: client.calls.list(limit=20)),
        ("account", lambda: client.api.accounts(twigate.accounts["a"].sid).fetch()),
        ("create", lambda: client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                               twiml="<Response><Hangup/></Response>")),
        ("raw", lambda: twigate.http("GET", base + "/Calls.json?PageSize=5")),
    ]
    for name, op in ops:
        t0 = time.monotonic()
        op()
        took = time.monotonic() - t0
        assert took < 0.5, f"REST {name} took {took:.2f}s while a webhook hangs"
    assert receiver.requests("/hang", call_sid=call.sid)[0].params["CallStatus"] == "in-progress"
    client.calls(call.sid).update(status="completed")
    twigate.wait_for_status(client, call.sid, TERMINAL)


# ------------------------------------------------------------- notifications

@pytest.mark.parametrize("which", ["url", "status_callback"])
def test_unreachable_receiver_logs_notification(twigate, client, which):
    dead = f"http://127.0.0.1:{free_port()}/gone"
    if which == "url":
        kw = {"url": dead}
    else:
        kw = {"twiml": SHORT_TWIML, "status_callback": dead}
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, **kw)
    done = twigate.wait_for_status(client, call.sid, TERMINAL, timeout=20)
    assert done.status == "completed"
    path = f"{twigate.account_uri()}/Calls/{call.sid}/Notifications.json"

    def notes():
        r = twigate.http("GET", path)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["notifications"] else None
    body = wait_for(notes, 20, message="no notification for the failed webhook")
    assert_list_envelope(body, "notifications")
    assert_matches_schema(NOTIFS, "get", 200, body)
    n = body["notifications"][0]
    assert n["error_code"] in ("11205", "11200"), n
    assert n["call_sid"] == call.sid
    assert n["account_sid"] == twigate.accounts["a"].sid
    assert n["request_url"] == dead, n
    assert n["request_method"] == "POST"
    assert n["more_info"] == f"https://www.twilio.com/docs/errors/{n['error_code']}", n
    assert n["log"] in ("0", "1"), n
    assert_rfc2822(n["date_created"], "date_created")
    # The full record (GET on its uri) carries the message and validates.
    r = twigate.http("GET", n["uri"])
    assert r.status_code == 200, r.text
    full = r.json()
    assert_matches_schema(n["uri"], "get", 200, full)
    assert full["sid"] == n["sid"] and full["message_text"], full
    sdk = client.calls(call.sid).notifications.list()
    assert [x.error_code for x in sdk] == [x["error_code"] for x in body["notifications"]]
    # ... and in the account-wide list
    r = twigate.http("GET", twigate.account_uri() + "/Notifications.json",
                     params={"PageSize": 1000})
    assert r.status_code == 200
    assert n["sid"] in [x["sid"] for x in r.json()["notifications"]]
    # Twilio's list items carry every field of the list schema too
    # (call_notification: message_text, message_date, ...; spec example readFull).
    missing = set(response_schema(NOTIFS, "get", 200)["properties"]["notifications"]
                  ["items"]["properties"]) - set(n)
    assert not missing, f"notification list item lacks {sorted(missing)}"


# ---------------------------------------------------------------- durability

def test_kill9_with_deliveries_pending_loses_nothing(make_twigate, receiver):
    tg = make_twigate()
    client = tg.client()
    receiver.set("/slow-cb", delay=5)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=receiver.url("/slow-cb"),
                               status_callback_event=ALL_EVENTS)
    tg.wait_for_status(client, call.sid, TERMINAL)
    first = receiver.wait_for_requests("/slow-cb", 1, call_sid=call.sid)[0]
    # The receiver holds every request 5 s, so nothing has been acknowledged
    # yet: every callback of this call is still pending when the daemon dies.
    assert time.monotonic() - first.t < 4.5, "too slow to kill with deliveries pending"
    tg.kill9()
    receiver.set("/slow-cb", delay=0)
    tg.start()

    def all_seen():
        seqs = {r.params["SequenceNumber"] for r in receiver.requests("/slow-cb",
                                                                   call_sid=call.sid)}
        return seqs >= {"0", "1", "2", "3"}
    wait_for(all_seen, 20, message="status callbacks lost across kill -9")
    got = receiver.requests("/slow-cb", call_sid=call.sid)
    by_number = {}
    for r in got:
        by_number.setdefault(r.params["SequenceNumber"], []).append(r)
        assert_webhook_headers(r)
    for seq, status in zip(("0", "1", "2", "3"), EVENT_STATUS):
        reqs = by_number[seq]
        assert {r.params["CallStatus"] for r in reqs} == {status}
        tokens = {r.header("I-Twilio-Idempotency-Token") for r in reqs}
        assert len(tokens) == 1, f"redelivery of #{seq} changed its idempotency token"
    assert set(by_number) == {"0", "1", "2", "3"}
    assert client.calls(call.sid).fetch().status == "completed"


def test_live_calls_reconciled_after_twigate_crash(twigate_ext, receiver):
    """External kaphila-sim: twigate dies (kill -9) while two calls are up at
    Kaphila and comes back.  Whether it resumes them or ends them (the TwiML
    program is in memory), no call may be left dangling: each ends at both
    ends, with end_time/duration, and the final status callback goes out
    exactly once, continuing the sequence."""
    tg = twigate_ext
    client = tg.client()
    calls = [client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML,
                                 status_callback=receiver.url("/live"),
                                 status_callback_event=ALL_EVENTS)
             for _ in range(2)]
    for c in calls:
        tg.wait_for_status(client, c.sid, "in-progress")
    for c in calls:
        receiver.wait_for_requests("/live", 3, call_sid=c.sid)
    tg.kill9()
    for c in calls:    # Kaphila still has them up
        assert tg.sim_get(c.sid)["status"] not in ("completed", "ended", "failed"), \
            tg.sim_get(c.sid)
    tg.start()
    after = {c.sid: client.calls(c.sid).fetch().status for c in calls}
    assert set(after.values()) <= {"in-progress", "completed"}, after
    # still-live calls are ended the two usual ways: far end, and REST
    if after[calls[0].sid] == "in-progress":
        # Recovery may be ending the call at this very moment: Kaphila then
        # says it already ended (409), which is the outcome we want anyway.
        r = requests.post(f"{tg.sim_url}/sim/calls/{calls[0].sid}/hangup", timeout=5)
        assert r.status_code in (200, 202, 204, 409), (r.status_code, r.text)
    if after[calls[1].sid] == "in-progress":
        client.calls(calls[1].sid).update(status="completed")
    for c in calls:
        done = tg.wait_for_status(client, c.sid, TERMINAL)
        assert done.status == "completed"
        assert done.duration is not None and done.end_time is not None
        wait_for(lambda: tg.sim_get(c.sid)["status"] == "completed", 5,
                 message=f"Kaphila call of {c.sid} not ended")
        final = receiver.wait_for_requests(
            "/live", 1, call_sid=c.sid, predicate=lambda r: r.params["CallStatus"] == "completed")
        assert final[0].params["SequenceNumber"] == "3"
        assert final[0].params["CallDuration"] == done.duration
        if after[c.sid] == "completed":
            # ended by twigate on recovery: it must say so
            notes = client.calls(c.sid).notifications.list()
            assert notes, "call ended on recovery without a notification"
    outbox_drained(tg)              # barrier: no delivery (or re-delivery) left to come
    for c in calls:
        # A callback whose answer twigate had not recorded when it was killed
        # may be delivered again (at least once) - with the same token.
        by_number = {}
        for r in receiver.requests("/live", call_sid=c.sid):
            by_number.setdefault(r.params["SequenceNumber"], []).append(r)
        assert sorted(by_number) == ["0", "1", "2", "3"], sorted(by_number)
        for seq, reqs in by_number.items():
            tokens = {r.header("I-Twilio-Idempotency-Token") for r in reqs}
            assert len(tokens) == 1, f"#{seq} redelivered with a new idempotency token"
            assert len({r.params["CallStatus"] for r in reqs}) == 1
    receiver.assert_all_valid()
