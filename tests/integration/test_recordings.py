"""Recordings (contract §6, §8.6; docs/recordings.md): the resources through
the official SDK, media byte for byte against what the simulator recorded,
Range requests, account isolation, recording status callbacks checked with
the SDK's RequestValidator, Record=true, REST-started windows, <Record>
windows, stop / Twilio.CURRENT / refusals, absent recordings, and every
response body against Twilio's OpenAPI schema.

The simulator records every answered call's bridge as a 400 Hz tone whose
length is the call's length in whole seconds (at least 1 s), so calls here
stay up a little over a second past the last window they record."""

import os
import re
import shutil
import struct
import threading
import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException

from harness import (DEFAULT_FROM, LIVE_TWIML, KaphilaSim, assert_list_envelope,
                     assert_matches_schema, assert_rfc2822, assert_twilio_error,
                     fresh_number, settle_call, wait_for)

RE_SID = re.compile(r"^RE[0-9a-f]{32}$")
COMMON_KEYS = {"account_sid", "api_version", "call_sid", "conference_sid", "date_created",
               "date_updated", "start_time", "duration", "sid", "price", "price_unit",
               "status", "channels", "source", "error_code", "uri", "encryption_details"}
CALL_REC_KEYS = COMMON_KEYS | {"track"}
ACCOUNT_REC_KEYS = COMMON_KEYS | {"subresource_uris", "media_url"}
# §8.6: the recording status callback carries these, not the voice set.
CALLBACK_BASE = {"AccountSid", "CallSid", "RecordingSid", "RecordingUrl", "RecordingStatus",
                 "RecordingChannels", "RecordingStartTime", "RecordingSource"}
VOICE_ONLY = {"CallStatus", "From", "To", "Direction", "ApiVersion", "Called", "Caller"}

ACCOUNT_LIST = "/2010-04-01/Accounts/{AccountSid}/Recordings.json"
ACCOUNT_ONE = "/2010-04-01/Accounts/{AccountSid}/Recordings/{Sid}.json"
CALL_LIST = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings.json"
CALL_ONE = "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}.json"


# ------------------------------------------------------------------ helpers

def start_call(tg, client, **kw):
    twiml = kw.pop("twiml", LIVE_TWIML)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=twiml, **kw)
    tg.wait_for_status(client, call.sid, "in-progress")
    return call


def hang_up(tg, client, sid):
    client.calls(sid).update(status="completed")
    tg.wait_for_status(client, sid, "completed")


def rec_path(tg, sid, account="a", ext=".json"):
    return f"{tg.account_uri(account)}/Recordings/{sid}{ext}"


def call_rec_path(tg, call_sid, sid=None, account="a"):
    base = f"{tg.account_uri(account)}/Calls/{call_sid}/Recordings"
    return base + (f"/{sid}.json" if sid else ".json")


def wait_recording(tg, sid, statuses=("completed",), account="a", timeout=10):
    """Polls the account-level resource until its status is one of statuses."""
    seen = []

    def check():
        r = tg.http("GET", rec_path(tg, sid, account), account=account)
        assert r.status_code == 200, r.text
        body = r.json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        return body if body["status"] in statuses else None
    try:
        return wait_for(check, timeout, interval=0.05)
    except AssertionError:
        raise AssertionError(f"recording {sid} never reached {statuses}; seen {seen}")


def call_recordings(tg, call_sid, account="a"):
    r = tg.http("GET", call_rec_path(tg, call_sid, account=account), account=account)
    assert r.status_code == 200, r.text
    return r.json()["recordings"]


def only_recording(tg, call_sid, account="a"):
    recs = call_recordings(tg, call_sid, account)
    assert len(recs) == 1, recs
    return recs[0]


def sim_wav(tg, call_sid, account="a"):
    """The simulator's own file for the call, from Kaphila's download
    endpoint with the account's Bearer key (not through twigate)."""
    kid = tg.sim_get(call_sid)["callId"]
    key = tg.accounts[account].kaphila_key
    r = requests.get(f"{tg.sim_url}/recordings/{kid}/download",
                     headers={"Authorization": f"Bearer {key}"}, timeout=5,
                     proxies={"http": None, "https": None})
    assert r.status_code == 200, r.text
    return r.content


def wav_parts(b):
    """(fmt fields, PCM bytes) of a canonical RIFF/WAVE file, checking that
    every size field agrees with the bytes."""
    assert b[:4] == b"RIFF" and b[8:12] == b"WAVE", b[:16]
    assert struct.unpack("<I", b[4:8])[0] == len(b) - 8
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], struct.unpack("<I", b[pos + 4:pos + 8])[0]
        body = b[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", body[:16])
        elif cid == b"data":
            assert len(body) == size, "data chunk size disagrees with the file"
            data = body
        pos += 8 + size + (size & 1)
    assert fmt and data is not None, "no fmt or data chunk"
    return fmt, data


def check_json(tg, body, account_level, call_sid=None, account="a"):
    acct = tg.accounts[account].sid
    assert set(body) == (ACCOUNT_REC_KEYS if account_level else CALL_REC_KEYS), sorted(body)
    sid = body["sid"]
    assert RE_SID.match(sid), sid
    assert body["account_sid"] == acct
    if call_sid:
        assert body["call_sid"] == call_sid
    assert body["api_version"] == "2010-04-01"
    assert body["conference_sid"] is None and body["encryption_details"] is None
    assert body["price"] is None and body["price_unit"] == "USD"
    assert type(body["channels"]) is int and body["channels"] in (1, 2)
    assert body["error_code"] is None or type(body["error_code"]) is int
    assert (body["error_code"] is not None) == (body["status"] == "absent"), body
    if body["duration"] is not None:
        assert isinstance(body["duration"], str) and body["duration"].isdigit(), body
    for f in ("date_created", "date_updated", "start_time"):
        assert_rfc2822(body[f], f)
    assert body["source"] in ("OutboundAPI", "RecordVerb", "StartCallRecordingAPI")
    if account_level:
        base = f"/2010-04-01/Accounts/{acct}/Recordings/{sid}"
        assert body["uri"] == base + ".json"
        assert body["media_url"] == tg.base_url + base
        assert body["subresource_uris"] == {"add_on_results": base + "/AddOnResults.json",
                                            "transcriptions": base + "/Transcriptions.json"}
    else:
        assert body["uri"] == f"/2010-04-01/Accounts/{acct}/Calls/{body['call_sid']}/Recordings/{sid}.json"
        assert body["track"] in ("inbound", "outbound", "both")


def check_callback(tg, req, status, source, sid, call_sid):
    p = req.params
    assert req.valid, f"signature not valid: {req.headers}"
    assert req.method == "POST"
    assert p["RecordingStatus"] == status
    assert p["RecordingSource"] == source
    assert p["RecordingSid"] == sid and p["CallSid"] == call_sid
    assert p["AccountSid"] == tg.accounts["a"].sid
    assert p["RecordingUrl"] == f"{tg.base_url}{tg.account_uri()}/Recordings/{sid}"
    assert p["RecordingChannels"] == "1"
    assert_rfc2822(p["RecordingStartTime"], "RecordingStartTime")
    expect = set(CALLBACK_BASE)
    if source != "RecordVerb":
        expect.add("RecordingTrack")
        assert p["RecordingTrack"] == "both"
    if status == "completed":
        expect |= {"RecordingDuration", "ErrorCode"}
        assert p["RecordingDuration"].isdigit() and p["ErrorCode"] == "0", p
    elif status == "absent":
        expect.add("ErrorCode")
        assert p["ErrorCode"] not in ("", "0"), p
    assert set(p) == expect, sorted(set(p) ^ expect)
    assert not (set(p) & VOICE_ONLY)


def media(tg, sid, account="a", ext="", headers=None, auth="default"):
    return tg.http("GET", rec_path(tg, sid, account, ext), account=account, headers=headers,
                   auth=auth)


# ------------------------------------------------------- Record=true, e2e

def test_record_true_end_to_end(twigate, client, receiver):
    rsc = receiver.url("/rsc")
    call = start_call(twigate, client, record=True, recording_status_callback=rsc,
                      recording_status_callback_event=["in-progress", "completed"])
    ip = receiver.wait_for_requests("/rsc", call_sid=call.sid)[0]
    rec = only_recording(twigate, call.sid)
    check_json(twigate, rec, False, call.sid)
    assert rec["status"] == "in-progress" and rec["source"] == "OutboundAPI"
    assert rec["duration"] is None
    check_callback(twigate, ip, "in-progress", "OutboundAPI", rec["sid"], call.sid)
    # The SDK sees the same resource at both levels.
    assert [r.sid for r in client.calls(call.sid).recordings.list()] == [rec["sid"]]
    assert client.recordings(rec["sid"]).fetch().status == "in-progress"
    # Media is not there while Kaphila is still recording.
    assert_twilio_error(media(twigate, rec["sid"]), 404, 20404)

    time.sleep(1.3)  # the recording's length, not a wait for an event
    hang_up(twigate, client, call.sid)
    done = receiver.wait_for_requests(
        "/rsc", call_sid=call.sid, predicate=lambda r: r.params["RecordingStatus"] == "completed")
    check_callback(twigate, done[0], "completed", "OutboundAPI", rec["sid"], call.sid)
    got = [r.params["RecordingStatus"] for r in receiver.requests("/rsc", call_sid=call.sid)]
    assert got == ["in-progress", "completed"], got

    body = wait_recording(twigate, rec["sid"])
    check_json(twigate, body, True, call.sid)
    assert body["duration"] == done[0].params["RecordingDuration"]
    # The media URL the callback named is the simulator's file, byte for byte.
    r = twigate.http("GET", done[0].params["RecordingUrl"])
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "audio/x-wav"
    assert r.headers.get("Accept-Ranges") == "bytes"
    assert r.content == sim_wav(twigate, call.sid)
    fmt, pcm = wav_parts(r.content)
    assert fmt[1] == 1 and fmt[2] == 8000 and len(pcm) >= 16000
    # Kaphila's late events (recording.completed after call.ended) send nothing
    # more: the barrier is an engine barrier call after the simulator ended
    # this one (its late events were queued before), and an empty outbox.
    settle_call(twigate, call.sid)
    assert len(receiver.requests("/rsc", call_sid=call.sid)) == 2


def test_record_true_default_events_and_get_method(twigate, client, receiver):
    """Without RecordingStatusCallbackEvent only `completed` is sent; GET puts
    the parameters in the query string (and the signature covers them)."""
    call = start_call(twigate, client, record=True,
                      recording_status_callback=receiver.url("/rsc-get?x=1"),
                      recording_status_callback_method="GET")
    time.sleep(1.2)  # the recording's length, not a wait for an event
    hang_up(twigate, client, call.sid)
    got = receiver.wait_for_requests("/rsc-get", predicate=lambda r: r.query.get("CallSid") == [call.sid])
    settle_call(twigate, call.sid)      # barrier: nothing more will come
    got = receiver.requests("/rsc-get", predicate=lambda r: r.query.get("CallSid") == [call.sid])
    assert len(got) == 1, got
    q = got[0]
    assert q.method == "GET" and q.valid
    assert q.query["x"] == ["1"]
    assert q.query["RecordingStatus"] == ["completed"]
    assert q.query["ErrorCode"] == ["0"]


def test_no_record_no_recording(twigate, client):
    call = start_call(twigate, client)
    hang_up(twigate, client, call.sid)
    settle_call(twigate, call.sid)      # barrier: Kaphila's late events are handled
    assert call_recordings(twigate, call.sid) == []
    assert client.recordings.list(call_sid=call.sid) == []


# ------------------------------------------------------------- the media

@pytest.fixture(scope="module")
def finished(twigate):
    """One completed Record=true recording: (call sid, recording sid, bytes)."""
    client = twigate.client("a")
    call = start_call(twigate, client, record=True)
    time.sleep(1.2)  # the recording's length, not a wait for an event
    hang_up(twigate, client, call.sid)
    sid = only_recording(twigate, call.sid)["sid"]
    wait_recording(twigate, sid)
    return call.sid, sid, sim_wav(twigate, call.sid)


def test_media_forms(twigate, finished):
    call_sid, sid, wav = finished
    for ext in ("", ".wav"):
        r = media(twigate, sid, ext=ext)
        assert r.status_code == 200 and r.content == wav, (ext, r.status_code)
        assert r.headers["Content-Type"] == "audio/x-wav"
    r = media(twigate, sid, ext=".mp3")    # encoded with LAME (test_ported.py)
    assert r.status_code == 200 and r.headers["Content-Type"] == "audio/mpeg", r.text
    meta = media(twigate, sid, ext=".json")
    assert meta.status_code == 200
    check_json(twigate, meta.json(), True, call_sid)
    for ext in (".ogg", ".wav.json"):
        assert_twilio_error(media(twigate, sid, ext=ext), 404, 20404)
    assert_twilio_error(media(twigate, "RE" + "0" * 32), 404, 20404)
    # Media needs no credentials unless the account sets media_auth (as on
    # Twilio); the JSON always does.
    assert media(twigate, sid, auth=None).content == wav
    assert_twilio_error(media(twigate, sid, ext=".json", auth=None), 401, 20003)


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-43", 0, 43),
    ("bytes=100-", 100, None),
    ("bytes=-100", -100, None),
    ("bytes=1000-1999", 1000, 1999),
])
def test_media_range(twigate, finished, header, start, end):
    _, sid, wav = finished
    r = media(twigate, sid, headers={"Range": header})
    assert r.status_code == 206, r.text
    want = wav[start:] if end is None else wav[start:end + 1]
    assert r.content == want
    first = start if start >= 0 else len(wav) + start
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(wav)}"
    assert r.headers["Content-Type"] == "audio/x-wav"


def test_media_range_unsatisfiable_and_ignored(twigate, finished):
    _, sid, wav = finished
    r = media(twigate, sid, headers={"Range": f"bytes={len(wav)}-"})
    assert_twilio_error(r, 416)
    assert r.headers["Content-Range"] == f"bytes */{len(wav)}"
    # Several ranges, or another unit: the whole file.
    for h in ("bytes=0-1,5-6", "items=0-1"):
        r = media(twigate, sid, headers={"Range": h})
        assert r.status_code == 200 and r.content == wav


def test_concurrent_first_requests_download_once(twigate, finished):
    """With the cache emptied, simultaneous requests fetch the file from
    Kaphila once: the others are told to retry (503 + Retry-After) and then
    get it from the cache."""
    call_sid, sid, wav = finished
    cache = twigate.db_path + ".recordings"
    os.remove(os.path.join(cache, call_sid + ".wav"))
    marker = f"{call_sid} downloading the bridge recording"
    before = twigate.log_text().count(marker)
    results, lock = [], threading.Lock()

    def fetch():
        for _ in range(100):
            r = media(twigate, sid)
            if r.status_code == 503:
                assert r.headers.get("Retry-After") == "1"
                assert_twilio_error(r, 503, 20503)
                time.sleep(0.05)    # pacing: honour the 503 Retry-After while encoding
                continue
            with lock:
                results.append((r.status_code, r.content))
            return
    threads = [threading.Thread(target=fetch) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 6
    assert all(code == 200 and body == wav for code, body in results)
    assert twigate.log_text().count(marker) == before + 1


# --------------------------------------------------- SDK list / fetch / delete

def test_sdk_list_fetch_paging_delete(twigate, client):
    calls = []
    for _ in range(3):
        call = start_call(twigate, client, record=True)
        calls.append(call.sid)
    time.sleep(1.2)  # the recording's length, not a wait for an event
    for sid in calls:
        hang_up(twigate, client, sid)
    recs = [only_recording(twigate, sid)["sid"] for sid in calls]
    for sid in recs:
        wait_recording(twigate, sid)

    # Newest first, across pages of one (the SDK follows next_page_uri).
    listed = [r.sid for r in client.recordings.list(page_size=1, limit=50)]
    pos = [listed.index(s) for s in recs]
    assert pos == sorted(pos, reverse=True), (recs, listed)
    page = client.recordings.page(page_size=2)
    assert [r.sid for r in page] == listed[:2] and page.next_page_url
    second = page.next_page()
    assert second is not None and [r.sid for r in second] == listed[2:4]

    # Filters: CallSid, date, ConferenceSid (no conferences: nothing).
    assert [r.sid for r in client.recordings.list(call_sid=calls[1])] == [recs[1]]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = twigate.http("GET", f"{twigate.account_uri()}/Recordings.json?DateCreated={today}"
                     "&PageSize=1000")
    assert set(recs) <= {x["sid"] for x in r.json()["recordings"]}
    r = twigate.http("GET", f"{twigate.account_uri()}/Recordings.json?DateCreated%3C=2000-01-01")
    assert r.json()["recordings"] == []
    assert client.recordings.list(conference_sid="CF" + "a" * 32) == []
    assert_twilio_error(twigate.http("GET", f"{twigate.account_uri()}/Recordings.json"
                                     "?DateCreated=yesterday"), 400)

    # Call level.
    inst = client.calls(calls[0]).recordings.list()
    assert [x.sid for x in inst] == [recs[0]]
    one = client.calls(calls[0]).recordings(recs[0]).fetch()
    assert one.status == "completed" and one.source == "OutboundAPI" and one.track == "both"
    assert one.channels == 1 and one.error_code is None and one.price is None
    assert int(one.duration) >= 1

    # Account level.
    acc = client.recordings(recs[0]).fetch()
    assert acc.call_sid == calls[0] and acc.status == "completed"
    assert acc.subresource_uris["transcriptions"].endswith(f"/{recs[0]}/Transcriptions.json")

    # Delete: gone from fetch, lists and media; soft-deleted view keeps it.
    cache = twigate.db_path + ".recordings"
    assert os.path.exists(os.path.join(cache, calls[0] + ".wav"))
    assert client.recordings(recs[0]).delete() is True
    with pytest.raises(TwilioRestException) as ei:
        client.recordings(recs[0]).fetch()
    assert ei.value.status == 404 and ei.value.code == 20404
    assert recs[0] not in [x.sid for x in client.recordings.list(limit=1000)]
    assert client.calls(calls[0]).recordings.list() == []
    assert_twilio_error(media(twigate, recs[0]), 404, 20404)
    assert not os.path.exists(os.path.join(cache, calls[0] + ".wav"))
    soft = client.recordings(recs[0]).fetch(include_soft_deleted=True)
    assert soft.status == "deleted"
    body = twigate.http("GET", rec_path(twigate, recs[0]) + "?IncludeSoftDeleted=true").json()
    check_json(twigate, body, True, calls[0])
    assert_matches_schema(ACCOUNT_ONE, "get", 200, body)
    assert recs[0] in [x.sid for x in client.recordings.list(include_soft_deleted=True, limit=1000)]
    # Deleting again: not found. At call level, through the SDK.
    assert_twilio_error(twigate.http("DELETE", rec_path(twigate, recs[0])), 404, 20404)
    assert client.calls(calls[1]).recordings(recs[1]).delete() is True
    assert_twilio_error(twigate.http("GET", call_rec_path(twigate, calls[1], recs[1])), 404, 20404)


def test_schemas(twigate, client, finished):
    call_sid, sid, _ = finished
    acct = twigate.account_uri()
    cases = [
        (f"{acct}/Recordings.json?PageSize=2", ACCOUNT_LIST),
        (f"{acct}/Recordings/{sid}.json", ACCOUNT_ONE),
        (f"{acct}/Calls/{call_sid}/Recordings.json", CALL_LIST),
        (f"{acct}/Calls/{call_sid}/Recordings/{sid}.json", CALL_ONE),
    ]
    for path, template in cases:
        r = twigate.http("GET", path)
        assert r.status_code == 200, (path, r.text)
        body = r.json()
        assert_matches_schema(template, "get", 200, body)
        if "recordings" in body:
            assert_list_envelope(body, "recordings")
            assert body["recordings"]
            for item in body["recordings"]:
                check_json(twigate, item, template == ACCOUNT_LIST)
        else:
            check_json(twigate, body, template == ACCOUNT_ONE, call_sid)


def test_bad_page_token(twigate):
    r = twigate.http("GET", f"{twigate.account_uri()}/Recordings.json?PageToken=PAnope")
    assert_twilio_error(r, 400)


# ------------------------------------------------------------ isolation

def test_account_isolation(twigate, client_b, finished):
    call_sid, sid, _ = finished
    b = "b"
    for path in (rec_path(twigate, sid, b), rec_path(twigate, sid, b, ""),
                 rec_path(twigate, sid, b, ".wav"), call_rec_path(twigate, call_sid, sid, b)):
        assert_twilio_error(twigate.http("GET", path, account=b), 404, 20404)
    assert_twilio_error(twigate.http("GET", call_rec_path(twigate, call_sid, account=b),
                                     account=b), 404, 20404)
    assert_twilio_error(twigate.http("DELETE", rec_path(twigate, sid, b), account=b), 404, 20404)
    assert_twilio_error(twigate.http("POST", call_rec_path(twigate, call_sid, sid, b),
                                     account=b, data={"Status": "stopped"}), 404, 20404)
    assert sid not in [r.sid for r in client_b.recordings.list(limit=1000)]
    assert client_b.recordings.list(call_sid=call_sid) == []
    # a's credentials on b's path, and b's on a's: 401.
    r = twigate.http("GET", rec_path(twigate, sid, "a", ""), account=b)
    assert_twilio_error(r, 401, 20003)
    # Still there for its owner.
    assert media(twigate, sid).status_code == 200


# ------------------------------------------- REST-started recording windows

def test_start_recording_window(twigate, client, receiver):
    call = start_call(twigate, client)
    time.sleep(0.3)     # some call audio before the window, not a wait for an event
    rsc = receiver.url("/rsc-api")
    t0 = time.monotonic()
    r = twigate.http("POST", call_rec_path(twigate, call.sid), data={
        "RecordingStatusCallback": rsc,
        "RecordingStatusCallbackEvent": "in-progress completed",
        "RecordingChannels": "dual", "Trim": "trim-silence"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert_matches_schema(CALL_LIST, "post", 201, body)
    check_json(twigate, body, False, call.sid)
    assert body["status"] == "in-progress" and body["source"] == "StartCallRecordingAPI"
    assert body["duration"] is None
    t1 = time.monotonic()
    sid = body["sid"]
    ip = receiver.wait_for_requests("/rsc-api", call_sid=call.sid)[0]
    check_callback(twigate, ip, "in-progress", "StartCallRecordingAPI", sid, call.sid)

    # Twilio.CURRENT names it while it runs.
    cur = twigate.http("GET", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings/Twilio.CURRENT.json")
    assert cur.status_code == 200 and cur.json()["sid"] == sid
    time.sleep(1.0)     # the window's length, not a wait for an event
    t2 = time.monotonic()
    stopped = client.calls(call.sid).recordings(sid).update(status="stopped")
    t3 = time.monotonic()
    # The window lasted between t2 - t1 and t3 - t0 (about 1 s; longer when
    # the machine is loaded); its duration is whole seconds of that.
    lo, hi = t2 - t1, t3 - t0
    assert stopped.status == "stopped"
    assert int(lo) <= int(stopped.duration) <= int(hi) + 1, (stopped.duration, lo, hi)
    assert_twilio_error(twigate.http(
        "GET", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings/Twilio.CURRENT.json"),
        404, 20404)
    # Stopping again changes nothing.
    again = twigate.http("POST", call_rec_path(twigate, call.sid, sid), data={"Status": "stopped"})
    assert again.status_code == 200 and again.json()["status"] == "stopped"
    assert_matches_schema(CALL_ONE, "post", 200, again.json())
    time.sleep(1.3)     # call audio after the window, not a wait for an event
    hang_up(twigate, client, call.sid)

    done = receiver.wait_for_requests(
        "/rsc-api", call_sid=call.sid, predicate=lambda q: q.params["RecordingStatus"] == "completed")
    check_callback(twigate, done[0], "completed", "StartCallRecordingAPI", sid, call.sid)
    assert done[0].params["RecordingDuration"] == stopped.duration
    final = wait_recording(twigate, sid)
    assert final["duration"] == stopped.duration and final["channels"] == 1
    fmt, pcm = wav_parts(media(twigate, sid).content)
    _, bridge = wav_parts(sim_wav(twigate, call.sid))
    assert fmt[1:4] == (1, 8000, 16000)
    # The window's span of the call's own audio (8 kHz, 16 bit), cut on a
    # frame boundary (the bounds allow one 1/8 s frame either side).
    assert (lo - 0.125) * 16000 <= len(pcm) <= (hi + 0.125) * 16000, (len(pcm), lo, hi)
    assert len(pcm) % 2 == 0, len(pcm)
    assert pcm in bridge


def test_start_recording_refused(twigate, client):
    acct = twigate.account_uri()
    # Unknown call, and a call that has ended.
    assert_twilio_error(twigate.http("POST", f"{acct}/Calls/CA{'1' * 32}/Recordings.json"),
                        404, 20404)
    call = start_call(twigate, client)
    hang_up(twigate, client, call.sid)
    body = assert_twilio_error(twigate.http("POST", call_rec_path(twigate, call.sid)), 400, 21220)
    assert "in progress" in body["message"]
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).recordings.create()
    assert ei.value.status == 400 and ei.value.code == 21220
    # Bad parameters.
    live = start_call(twigate, client)
    for data in ({"RecordingChannels": "triple"}, {"RecordingStatusCallback": "not a url"},
                 {"RecordingStatusCallbackEvent": "finished"}):
        assert_twilio_error(twigate.http("POST", call_rec_path(twigate, live.sid), data=data), 400)
    assert call_recordings(twigate, live.sid) == []
    hang_up(twigate, client, live.sid)


def test_pause_refused_resume_noop_and_update_errors(twigate, client):
    call = start_call(twigate, client)
    rec = client.calls(call.sid).recordings.create()
    assert rec.status == "in-progress"
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).recordings(rec.sid).update(status="paused")
    assert ei.value.status == 400 and ei.value.code == 21220
    assert "pause" in ei.value.msg.lower()
    body = assert_twilio_error(twigate.http(
        "POST", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings/Twilio.CURRENT.json",
        data={"Status": "paused", "PauseBehavior": "skip"}), 400, 21220)
    assert "Kaphila" in body["message"]
    # Resuming a running recording: nothing to do.
    assert client.calls(call.sid).recordings(rec.sid).update(status="in-progress").status == "in-progress"
    assert_twilio_error(twigate.http("POST", call_rec_path(twigate, call.sid, rec.sid),
                                     data={"Status": "completed"}), 400)
    assert_twilio_error(twigate.http("POST", call_rec_path(twigate, call.sid, rec.sid)), 400)
    # An in-progress recording cannot be deleted.
    assert_twilio_error(twigate.http("DELETE", call_rec_path(twigate, call.sid, rec.sid)),
                        400, 21220)
    # Twilio.CURRENT stops it.
    r = twigate.http("POST", f"{twigate.account_uri()}/Calls/{call.sid}/Recordings/Twilio.CURRENT.json",
                     data={"Status": "stopped"})
    assert r.status_code == 200 and r.json()["sid"] == rec.sid and r.json()["status"] == "stopped"
    with pytest.raises(TwilioRestException) as ei:
        client.calls(call.sid).recordings(rec.sid).update(status="in-progress")
    assert ei.value.code == 21220
    hang_up(twigate, client, call.sid)


def test_stop_record_true_recording(twigate, client, receiver):
    """Status=stopped on the Record=true recording is Kaphila's stop: the
    file is final while the call goes on, so the media is there before the
    hang-up, and nothing can be recorded on this call any more."""
    call = start_call(twigate, client, record=True,
                      recording_status_callback=receiver.url("/rsc-stop"))
    time.sleep(1.2)  # the recording's length, not a wait for an event
    rec = client.calls(call.sid).recordings("Twilio.CURRENT").update(status="stopped")
    assert rec.status == "stopped" and rec.source == "OutboundAPI"
    stops = [q for q in twigate.sim_get(call.sid)["requests"] if q["path"].endswith("/stop")]
    assert len(stops) == 1 and stops[0]["method"] == "POST", stops
    done = receiver.wait_for_requests("/rsc-stop", call_sid=call.sid)[0]
    check_callback(twigate, done, "completed", "OutboundAPI", rec.sid, call.sid)
    assert client.calls(call.sid).fetch().status == "in-progress"
    assert media(twigate, rec.sid).content == sim_wav(twigate, call.sid)
    assert_twilio_error(twigate.http("POST", call_rec_path(twigate, call.sid)), 400, 21220)
    hang_up(twigate, client, call.sid)
    settle_call(twigate, call.sid)      # barrier: nothing more will come
    got = receiver.requests("/rsc-stop", call_sid=call.sid)
    assert len(got) == 1, [(q.params, q.headers.get("i-twilio-idempotency-token")) for q in got]


def test_window_open_at_hangup_ends_with_the_call(twigate, client):
    call = start_call(twigate, client)
    rec = client.calls(call.sid).recordings.create()
    time.sleep(1.3)  # the recording's length, not a wait for an event
    hang_up(twigate, client, call.sid)
    body = wait_recording(twigate, rec.sid)
    fmt, pcm = wav_parts(media(twigate, rec.sid).content)
    assert pcm and pcm in wav_parts(sim_wav(twigate, call.sid))[1]
    # The window ran to the end of Kaphila's file; its duration is the audio's.
    assert int(body["duration"]) == round(len(pcm) / 16000) >= 1, (body["duration"], len(pcm))


# ------------------------------------------------------------- <Record>

def test_record_verb_window(twigate, client, receiver):
    rsc = receiver.url("/rsc-verb")
    receiver.set("/verb", '<Response><Record maxLength="1" playBeep="false" finishOnKey=""'
                 f' recordingStatusCallback="{rsc}"'
                 ' recordingStatusCallbackEvent="in-progress completed absent"'
                 ' action="/verb/done"/></Response>')
    receiver.set("/verb/done", '<Response><Pause length="600"/></Response>')
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/verb"))
    act = receiver.wait_for_requests("/verb/done", call_sid=call.sid, timeout=10)[0]
    sid = act.params["RecordingSid"]
    got = receiver.wait_for_requests("/rsc-verb", call_sid=call.sid)
    check_callback(twigate, got[0], "in-progress", "RecordVerb", sid, call.sid)
    # Known at once, media when the call's recording is final.
    body = twigate.http("GET", call_rec_path(twigate, call.sid, sid)).json()
    assert body["status"] == "processing" and body["source"] == "RecordVerb"
    assert body["duration"] == act.params["RecordingDuration"] == "1"
    assert_matches_schema(CALL_ONE, "get", 200, body)
    assert "not available yet" in assert_twilio_error(media(twigate, sid), 404, 20404)["message"]
    time.sleep(1.3)     # call audio after the window, not a wait for an event
    hang_up(twigate, client, call.sid)
    done = receiver.wait_for_requests(
        "/rsc-verb", call_sid=call.sid, predicate=lambda q: q.params["RecordingStatus"] == "completed")
    check_callback(twigate, done[0], "completed", "RecordVerb", sid, call.sid)
    assert done[0].params["RecordingDuration"] == "1"
    fmt, pcm = wav_parts(media(twigate, sid).content)
    assert 14000 <= len(pcm) <= 18000 and pcm in wav_parts(sim_wav(twigate, call.sid))[1]
    # The cut file is the media now; the bridge copy is not kept for it.
    cache = twigate.db_path + ".recordings"
    assert os.path.exists(os.path.join(cache, sid + ".wav"))
    assert not os.path.exists(os.path.join(cache, call.sid + ".wav"))


def test_transient_download_failure_is_retried(twigate, client, receiver):
    """Kaphila failing the download (HTTP 500) only delays the recording:
    twigate tries again (on Kaphila's next event about the file, or on a
    timer) and the completed callback still goes out, once."""
    call = start_call(twigate, client, record=True,
                      recording_status_callback=receiver.url("/rsc-retry"))
    time.sleep(1.2)  # the recording's length, not a wait for an event
    twigate.sim_fail(500, count=1, endpoint="/recordings", key=twigate.accounts["a"].kaphila_key)
    try:
        hang_up(twigate, client, call.sid)
        sid = only_recording(twigate, call.sid)["sid"]
        done = receiver.wait_for_requests("/rsc-retry", call_sid=call.sid, timeout=15)
        check_callback(twigate, done[0], "completed", "OutboundAPI", sid, call.sid)
    finally:
        twigate.sim_clear_fail()
    assert f"{call.sid} bridge download failed (attempt 1)" in twigate.log_text()
    assert wait_recording(twigate, sid)["status"] == "completed"
    assert media(twigate, sid).content == sim_wav(twigate, call.sid)
    settle_call(twigate, call.sid)      # barrier: nothing more will come
    assert len(receiver.requests("/rsc-retry", call_sid=call.sid)) == 1


def test_restart_finishes_waiting_recordings(twigate_ext, receiver):
    """A recording still waiting for Kaphila's file when twigate stops is
    finished at the next start: the download is retried, the completed
    callback goes out (external simulator, so the file outlives twigate)."""
    tg = twigate_ext
    client = tg.client()
    call = start_call(tg, client, record=True,
                      recording_status_callback=receiver.url("/rsc-restart"))
    time.sleep(1.2)  # the recording's length, not a wait for an event
    tg.sim_fail(500, count=-1, endpoint="/recordings")
    try:
        hang_up(tg, client, call.sid)
        sid = only_recording(tg, call.sid)["sid"]
        wait_for(lambda: f"{call.sid} bridge download failed" in tg.log_text(), 5)
        assert wait_recording(tg, sid, ("processing",))["status"] == "processing"
        tg.stop()
    finally:
        tg.sim_clear_fail()
    assert receiver.requests("/rsc-restart", call_sid=call.sid) == []
    tg.start()
    done = receiver.wait_for_requests("/rsc-restart", call_sid=call.sid, timeout=10)
    check_callback(tg, done[0], "completed", "OutboundAPI", sid, call.sid)
    assert media(tg, sid).content == sim_wav(tg, call.sid)


# ---------------------------------------------------------------- absent

@pytest.fixture
def sim_with_dir(tmp_path, accounts):
    recdir = tmp_path / "sim-recordings"
    recdir.mkdir()
    sim = KaphilaSim(tmp_path / "sim", [a.kaphila_key for a in accounts.values()],
                     extra_args=["--recordings-dir", str(recdir)])
    sim.start()
    yield sim, recdir
    sim.stop()


def test_absent_when_kaphila_has_no_file(sim_with_dir, make_twigate, receiver):
    sim, recdir = sim_with_dir
    tg = make_twigate(external_sim=sim)
    client = tg.client("a")
    call = start_call(tg, client, record=True, recording_status_callback=receiver.url("/rsc-abs"),
                      recording_status_callback_event=["completed", "absent"])
    # Make the simulator unable to write the file: a directory in its place.
    name = f"rec-{tg.sim_get(call.sid)['callId']}.wav"
    wait_for(lambda: (recdir / name).exists(), 5)
    os.remove(recdir / name)
    os.mkdir(recdir / name)
    hang_up(tg, client, call.sid)
    got = receiver.wait_for_requests("/rsc-abs", call_sid=call.sid)[0]
    sid = only_recording(tg, call.sid)["sid"]
    check_callback(tg, got, "absent", "OutboundAPI", sid, call.sid)
    body = wait_recording(tg, sid, ("absent",))
    check_json(tg, body, True, call.sid)
    assert body["error_code"] == int(got.params["ErrorCode"])
    assert_matches_schema(ACCOUNT_ONE, "get", 200, body)
    assert "absent" in assert_twilio_error(media(tg, sid), 404, 20404)["message"]
    notes = [client.calls(call.sid).notifications(n.sid).fetch()
             for n in client.calls(call.sid).notifications.list()]
    hits = [n for n in notes if n.error_code == got.params["ErrorCode"]]
    assert len(hits) == 1 and "absent" in hits[0].message_text, [
        (n.error_code, n.message_text) for n in notes]
    shutil.rmtree(recdir / name)
