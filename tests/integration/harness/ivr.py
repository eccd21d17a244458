"""Helpers of the TwiML executor tests (test_twiml.py, test_twiml_failures.py):
a call's two sides, as those tests check them.

  * the customer side: routes / assert_in_progress_request over the
    receiver's requests, notes (the call's notifications with their message
    text decoded) and event_urls (the call's event log);
  * the Kaphila side: kaphila_requests / spoken / wait_kaphila /
    wait_spoken, the simulator's transcript (GET /sim/calls/{CallSid})
    filtered to the call-control commands twigate sent.

create() places a call whose Url is a receiver path, twiml() renders a
twilio-python VoiceResponse, and finish() waits until everything the call
caused has been seen (harness.settle_call), so both sides can be asserted
complete."""

import urllib.parse

from twilio.twiml.voice_response import VoiceResponse

from .barriers import settle_call
from .daemon import DEFAULT_FROM
from .util import fresh_number, wait_for

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
APP_ERROR = "We're sorry, an application error has occurred. Goodbye."
CONTROL = ("/voice", "/play", "/hangup", "/gather")


def create(client, receiver, path, **kw):
    return client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url(path),
                               **kw)


def finish(tg, client, sid, timeout=15, pause=0):
    """Waits until the call is terminal and everything it caused has been
    seen (harness.settle_call: the simulator ended it, an engine barrier call
    passed - with `pause`, longer than any timer of the call's document that
    must not fire - and the outbox is empty), so the transcript and the
    receiver's requests can be asserted complete."""
    call = tg.wait_for_status(client, sid, TERMINAL, timeout=timeout)
    settle_call(tg, sid, pause=pause, timeout=max(timeout, 30))
    return call


def kaphila_requests(tg, sid, paths=CONTROL):
    """[(path, body without callId)] of the call-control commands twigate
    sent to Kaphila, in order."""
    out = []
    for q in tg.sim_get(sid)["requests"]:
        if q["path"] in paths:
            body = dict(q.get("body") or {})
            body.pop("callId", None)
            out.append((q["path"], body))
    return out


def spoken(tg, sid):
    return [b["text"] for p, b in kaphila_requests(tg, sid, ("/voice",))]


def wait_kaphila(tg, sid, predicate, timeout=10, what="transcript condition"):
    """Polls the transcript until predicate(kaphila_requests) is true."""
    return wait_for(lambda: predicate(kaphila_requests(tg, sid)) and kaphila_requests(tg, sid),
                    timeout, message=what)


def wait_spoken(tg, sid, text, timeout=10):
    return wait_kaphila(tg, sid, lambda reqs: ("/voice", {"text": text}) in reqs, timeout,
                        f"/voice {text!r} never sent")


def notes(tg, sid):
    """The call's notifications, oldest first: [{error_code, log, message_text,
    request_url}] (message_text decoded from Twilio's form encoding)."""
    r = tg.http("GET", f"{tg.account_uri()}/Calls/{sid}/Notifications.json",
                params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    out = []
    for n in reversed(r.json()["notifications"]):
        full = tg.http("GET", n["uri"])
        assert full.status_code == 200, full.text
        body = full.json()
        text = body.get("message_text") or ""
        msg = urllib.parse.parse_qs(text).get("Msg", [""])[0]
        out.append({"error_code": body["error_code"], "log": body["log"], "message": msg,
                    "request_url": body.get("request_url")})
    return out


def event_urls(tg, sid):
    """The `url` of each request in the call's event log (webhooks, Kaphila
    commands and twigate's own decisions, which use method TWIGATE)."""
    r = tg.http("GET", f"{tg.account_uri()}/Calls/{sid}/Events.json", params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    return [(e["request"].get("method"), e["request"].get("url")) for e in r.json()["events"]]


def routes(receiver, sid):
    return [r.route for r in receiver.requests(call_sid=sid)]


def assert_in_progress_request(req, sid, method="POST"):
    assert req.valid, f"bad signature on {req.method} {req.url}"
    assert req.method == method, (req.method, req.url)
    p = req.params
    assert p["CallSid"] == sid
    assert p["CallStatus"] == "in-progress", p
    assert p["Direction"] == "outbound-api", p
    assert p["ApiVersion"] == "2010-04-01"
    assert not req.duplicate_keys, req.duplicate_keys


def twiml(build):
    r = VoiceResponse()
    build(r)
    return str(r)
