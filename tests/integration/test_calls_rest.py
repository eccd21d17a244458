"""The Call resource over REST (contract §2, §3, §4): create, fetch, the
status lifecycle, update (cancel / hang up / redirect), delete, the
simulator's outcomes and the Events / Notifications sub-resources.

The SDK is the client wherever it can express the request; raw requests are
used only to look at the exact JSON the daemon sends."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import (DEFAULT_FROM, engine_barrier, settle_call, LIVE_TWIML, SHORT_TWIML, assert_call_json,
                     assert_list_envelope, assert_matches_schema, assert_rfc2822,
                     assert_twilio_error, fresh_number, parse_rfc2822, utcnow, wait_for)

CALLS = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
CALL = "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json"
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


@pytest.fixture(scope="module")
def slow_ring(make_twigate_module):
    """A daemon whose simulator rings for ~2 s (40 s / 20 in fast mode), so a
    call can be seen - and canceled - while ringing."""
    return make_twigate_module(overrides={"sim.answer_ms": 40000})


def fetch_raw(tg, sid, account="a"):
    r = tg.http("GET", f"{tg.account_uri(account)}/Calls/{sid}.json", account=account)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_matches_schema(CALL, "get", 200, body)
    return body


def sim_paths(tg, sid):
    return [req["path"] for req in tg.sim_get(sid)["requests"]]


# ------------------------------------------------------------------ create

def test_create_with_url_answers_201_queued_call(twigate, receiver):
    receiver.set("/voice", SHORT_TWIML)
    to = fresh_number()
    acct = twigate.accounts["a"]
    before = utcnow()
    r = twigate.create_call_raw(To=to, From=DEFAULT_FROM, Url=receiver.url("/voice"))
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert_matches_schema(CALLS, "post", 201, body)
    assert_call_json(body, acct.sid, to=to, from_=DEFAULT_FROM)
    assert body["status"] == "queued"
    assert body["direction"] == "outbound-api"
    for f in ("start_time", "end_time", "duration", "price", "answered_by",
              "parent_call_sid"):
        assert body[f] is None, (f, body[f])
    created = parse_rfc2822(body["date_created"])
    assert abs((created - before).total_seconds()) < 10, body["date_created"]
    assert body["date_created"] == body["date_updated"]

    # The call runs: answered, the Url is fetched, "Hi" is said, the end of
    # the document hangs up.
    done = twigate.wait_for_status(twigate.client(), body["sid"], TERMINAL)
    assert done.status == "completed"
    receiver.wait_for_requests("/voice", call_sid=body["sid"])
    receiver.assert_all_valid()

    fetched = fetch_raw(twigate, body["sid"])
    assert_call_json(fetched, acct.sid, to=to, from_=DEFAULT_FROM)
    assert fetched["status"] == "completed"
    assert fetched["date_created"] == body["date_created"]
    start = assert_rfc2822(fetched["start_time"], "start_time")
    end = assert_rfc2822(fetched["end_time"], "end_time")
    assert start <= end
    assert fetched["duration"] is not None and fetched["duration"].isdigit()
    assert parse_rfc2822(fetched["date_updated"]) >= created


def test_create_with_twiml_runs_the_document(twigate, client):
    to = fresh_number()
    call = client.calls.create(to=to, from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    assert call.status == "queued"
    assert call.direction == "outbound-api"
    assert call.to == to and call.from_ == DEFAULT_FROM
    assert call.account_sid == twigate.accounts["a"].sid
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert done.end_time is not None and done.start_time is not None
    # What reached Kaphila: the call, then the <Say> text, then a hang-up.
    reqs = twigate.sim_get(call.sid)["requests"]
    paths = [q["path"] for q in reqs]
    assert paths[0] == "/makecall", paths
    says = [q for q in reqs if q["path"] == "/voice"]
    assert says and "Hi" in json.dumps(says[0]["body"]), reqs
    assert "/hangup" in paths, paths
    assert paths.index("/voice") < paths.index("/hangup")
    fetched = fetch_raw(twigate, call.sid)
    assert fetched["status"] == "completed"


def test_fetch_via_sdk_matches_raw(twigate, client):
    to = fresh_number()
    call = client.calls.create(to=to, from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(client, call.sid, TERMINAL)
    sdk = client.calls(call.sid).fetch()
    raw = fetch_raw(twigate, call.sid)
    assert sdk.sid == raw["sid"] and sdk.status == raw["status"]
    assert sdk.to_formatted == raw["to_formatted"]
    assert sdk.duration == raw["duration"]
    assert sdk.date_created is not None and sdk.date_created.tzinfo is not None


def test_fetch_unknown_call_is_404(twigate, client):
    sid = "CA" + "0123456789abcdef" * 2
    r = twigate.http("GET", f"{twigate.account_uri()}/Calls/{sid}.json")
    assert_twilio_error(r, 404, 20404)
    with pytest.raises(TwilioRestException) as ei:
        client.calls(sid).fetch()
    assert ei.value.status == 404 and ei.value.code == 20404


# --------------------------------------------------------------- lifecycle

def test_lifecycle_ringing_in_progress_hangup(slow_ring):
    tg = slow_ring
    client = tg.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    ringing = tg.wait_for_status(client, call.sid, {"ringing", "in-progress"}, timeout=5)
    assert ringing.status == "ringing", "call skipped ringing (slow_ring rings ~2 s)"
    assert ringing.end_time is None and ringing.duration is None

    live = tg.wait_for_status(client, call.sid, "in-progress", timeout=10)
    assert live.start_time is not None and live.end_time is None
    assert live.duration is None

    r = tg.http("POST", f"{tg.account_uri()}/Calls/{call.sid}.json",
                data={"Status": "completed"})
    assert r.status_code == 200, r.text
    assert_matches_schema(CALL, "post", 200, r.json())
    assert r.json()["sid"] == call.sid

    done = tg.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    raw = fetch_raw(tg, call.sid)
    start = assert_rfc2822(raw["start_time"], "start_time")
    end = assert_rfc2822(raw["end_time"], "end_time")
    assert end >= start
    assert raw["duration"] is not None and raw["duration"].isdigit()
    # start_time is when the call was dialled (contract §2), the duration
    # counts the answered part, so it cannot exceed end - start.
    assert int(raw["duration"]) <= (end - start).total_seconds() + 1
    assert "/hangup" in sim_paths(tg, call.sid)


def test_cancel_ringing_call(slow_ring):
    tg = slow_ring
    client = tg.client()
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    tg.wait_for_status(client, call.sid, "ringing", timeout=5)
    updated = client.calls(call.sid).update(status="canceled")
    assert updated.sid == call.sid
    done = tg.wait_for_status(client, call.sid, TERMINAL, timeout=5)
    assert done.status == "canceled"
    assert done.duration is None
    # Kaphila was told to hang up, and the call never gets answered later.
    wait_for(lambda: "/hangup" in sim_paths(tg, call.sid), 5, message="no /hangup sent")
    # Barrier: the simulator has ended the call (it can answer it no more),
    # an engine barrier call has passed and the outbox is empty.
    again = settle_call(tg, call.sid)
    assert again["status"] == "canceled"
    assert again["duration"] is None
    events = [e["event"] for e in tg.sim_get(call.sid)["events"]]
    assert "call.answered" not in events, events


def test_status_completed_hangs_up_live_call(twigate, client):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    twigate.wait_for_status(client, call.sid, "in-progress")
    client.calls(call.sid).update(status="completed")
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert done.end_time is not None
    assert isinstance(done.duration, str) and done.duration.isdigit()


def test_status_canceled_does_not_end_in_progress_call(twigate, client):
    """Contract §4: canceled ends queued/ringing calls, no effect on in-progress."""
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    try:
        twigate.wait_for_status(client, call.sid, "in-progress")
        try:
            client.calls(call.sid).update(status="canceled")
        except TwilioRestException as e:   # refusing is acceptable, ending is not
            assert e.status == 400, e
        engine_barrier(twigate)     # the engine is past anything the update caused
        assert client.calls(call.sid).fetch().status == "in-progress"
        assert "/hangup" not in sim_paths(twigate, call.sid)
    finally:
        client.calls(call.sid).update(status="completed")
    twigate.wait_for_status(client, call.sid, "completed")


def test_redirect_completed_call_is_21220(twigate, client, receiver):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(client, call.sid, TERMINAL)
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).update(url=receiver.url("/late"))
    assert ei.value.status == 400 and ei.value.code == 21220
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).update(twiml=SHORT_TWIML)
    assert ei.value.status == 400 and ei.value.code == 21220
    r = twigate.http("POST", f"{twigate.account_uri()}/Calls/{call.sid}.json",
                     data={"Url": receiver.url("/late")})
    assert_twilio_error(r, 400, 21220)
    assert receiver.requests("/late") == []
    assert client.calls(call.sid).fetch().status == "completed"


# ------------------------------------------------------------------ delete

def test_delete_completed_call(twigate, client):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(client, call.sid, TERMINAL)
    r = twigate.http("DELETE", f"{twigate.account_uri()}/Calls/{call.sid}.json")
    assert r.status_code == 204, r.text
    assert r.content == b""
    r = twigate.http("GET", f"{twigate.account_uri()}/Calls/{call.sid}.json")
    assert_twilio_error(r, 404, 20404)


def test_delete_completed_call_sdk_returns_true(twigate, client):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(client, call.sid, TERMINAL)
    assert client.calls(call.sid).delete() is True
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).fetch()
    assert ei.value.status == 404 and ei.value.code == 20404
    assert call.sid not in [c.sid for c in client.calls.list(to=call.to)]
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).delete()
    assert ei.value.status == 404


def test_delete_live_call_is_refused(twigate, client):
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    try:
        twigate.wait_for_status(client, call.sid, "in-progress")
        with pytest.raises(TwilioRestException) as ei:
            client.calls(call.sid).delete()
        assert ei.value.status == 400 and ei.value.code == 21220
        assert client.calls(call.sid).fetch().status == "in-progress"
    finally:
        client.calls(call.sid).update(status="completed")
    twigate.wait_for_status(client, call.sid, "completed")


# ---------------------------------------------------------------- outcomes

@pytest.mark.parametrize("suffix,status", [
    ("0001", "busy"), ("0002", "no-answer"), ("0003", "failed")])
def test_unanswered_outcomes(twigate, client, suffix, status):
    call = client.calls.create(to=fresh_number(suffix), from_=DEFAULT_FROM,
                               twiml=SHORT_TWIML, timeout=10)
    done = twigate.wait_for_status(client, call.sid, TERMINAL, timeout=15)
    assert done.status == status
    assert done.duration is None          # contract §2: null for busy/failed/no-answer
    assert done.answered_by is None
    fetch_raw(twigate, call.sid)
    # Never answered, so the TwiML never ran.
    assert "/voice" not in sim_paths(twigate, call.sid)


@pytest.mark.parametrize("suffix,amd,answered_by", [
    ("0004", "Enable", "machine_start"),
    (None, "Enable", "human"),
    ("0004", None, None),
])
def test_answering_machine_detection(twigate, client, suffix, amd, answered_by):
    kw = {"machine_detection": amd} if amd else {}
    call = client.calls.create(to=fresh_number(suffix), from_=DEFAULT_FROM,
                               twiml=SHORT_TWIML, **kw)
    done = twigate.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    assert done.answered_by == answered_by
    raw = fetch_raw(twigate, call.sid)
    assert raw["answered_by"] == answered_by


# ----------------------------------------------------------- sub-resources

def test_events_and_notifications_of_a_call(twigate, client, receiver):
    receiver.set("/voice", SHORT_TWIML)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                               url=receiver.url("/voice"))
    twigate.wait_for_status(client, call.sid, TERMINAL)
    base = f"{twigate.account_uri()}/Calls/{call.sid}"

    r = twigate.http("GET", base + "/Events.json")
    assert r.status_code == 200, r.text
    events = r.json()
    assert_list_envelope(events, "events")
    assert_matches_schema("/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Events.json",
                          "get", 200, events)
    assert len(events["events"]) >= 1, events

    r = twigate.http("GET", base + "/Notifications.json")
    assert r.status_code == 200, r.text
    notes = r.json()
    assert_list_envelope(notes, "notifications")
    assert_matches_schema(
        "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Notifications.json",
        "get", 200, notes)
    assert notes["notifications"] == []      # a healthy call logs nothing
    assert client.calls(call.sid).notifications.list() == []


def test_ignored_parameters_are_20001_warnings_stored_with_the_call(twigate, client):
    # The row and its warnings are written in one commit, before /makecall:
    # by the time the 201 arrives both are readable.
    r = twigate.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML,
                                SendDigits="1234", Byoc="BY" + "0" * 32, Frobnicate="yes")
    assert r.status_code == 201, r.text
    sid = r.json()["sid"]
    notes = client.calls(sid).notifications.list()
    texts = sorted(n.message_text for n in notes)
    assert [n.error_code for n in notes] == ["20001"] * 3, texts
    assert all(n.log == "1" for n in notes), [n.log for n in notes]
    assert any("send_digits" in t and "DTMF" in t for t in texts), texts
    assert any("byoc" in t for t in texts), texts
    assert any("Unknown+parameter+Frobnicate" in t or "Unknown parameter Frobnicate" in t
               for t in texts), texts
    twigate.wait_for_status(client, sid, TERMINAL)


def test_a_burst_of_creates_is_stored_call_by_call(twigate, client):
    # Concurrent creates share the engine's group commits; every 201 must be
    # its own stored call, with its own warning, and every call must end.
    to = fresh_number()
    with ThreadPoolExecutor(max_workers=16) as pool:
        rs = list(pool.map(lambda i: twigate.create_call_raw(
            To=to, From=DEFAULT_FROM, Twiml=SHORT_TWIML, Tag=str(i)), range(48)))
    assert [r.status_code for r in rs] == [201] * 48, [r.text for r in rs if r.status_code != 201]
    sids = [r.json()["sid"] for r in rs]
    assert len(set(sids)) == 48
    assert sorted(c.sid for c in client.calls.list(to=to)) == sorted(sids)
    for i, sid in enumerate(sids):
        notes = client.calls(sid).notifications.list()
        assert len(notes) == 1 and "Tag" in notes[0].message_text, (i, notes)
    for sid in sids:
        twigate.wait_for_status(client, sid, TERMINAL)


# ------------------------------------------------------------- persistence

def test_calls_survive_a_graceful_restart(make_twigate):
    tg = make_twigate()
    client = tg.client()
    to = fresh_number()
    sids = [client.calls.create(to=to, from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
            for _ in range(2)]
    for sid in sids:
        tg.wait_for_status(client, sid, TERMINAL)
    before = {sid: fetch_raw(tg, sid) for sid in sids}
    tg.restart()                      # SIGTERM, exit 0 asserted, same db
    after = {sid: fetch_raw(tg, sid) for sid in sids}
    assert after == before
    assert [c.sid for c in tg.client().calls.list(to=to)] == list(reversed(sids))
