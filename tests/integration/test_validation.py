"""Create-call validation (contract §3 and §7): every rejected request gets
HTTP 400 and a Twilio error body of exactly {code, message, more_info,
status}, and nothing is created; lenient input the SDKs really send
(booleans in any case, list parameters as repeated keys or space separated)
is accepted."""

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import DEFAULT_FROM, assert_twilio_error, fresh_number

HANGUP = "<Response><Hangup/></Response>"
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def count_calls(tg, account="a"):
    r = tg.http("GET", tg.account_uri(account) + "/Calls.json", params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["calls"])


def valid_params(**over):
    p = {"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": HANGUP}
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


CASES = [
    # id, params changes, expected code (None = any 21200-range code)
    ("missing-To", {"To": None}, 21201),
    ("invalid-To-letters", {"To": "not-a-number"}, 21211),
    ("invalid-To-short", {"To": "123"}, 21211),
    ("missing-From", {"From": None}, 21213),
    ("invalid-From", {"From": "abc"}, 21212),
    ("missing-Url-and-Twiml", {"Twiml": None}, 21205),
    ("bad-Url", {"Twiml": None, "Url": "not a url"}, 21205),
    ("relative-Url", {"Twiml": None, "Url": "/voice.xml"}, 21205),
    ("bad-FallbackUrl", {"FallbackUrl": "not a url"}, 21205),
    ("bad-StatusCallbackEvent", {"StatusCallback": "http://127.0.0.1:9/cb",
                                 "StatusCallbackEvent": "exploded"}, 21626),
    ("bad-StatusCallbackEvent-in-list", {"StatusCallback": "http://127.0.0.1:9/cb",
                                         "StatusCallbackEvent": ["initiated", "exploded"]},
     21626),
    ("Timeout-not-integer", {"Timeout": "abc"}, None),
    ("Timeout-too-big", {"Timeout": "601"}, None),
    ("Timeout-negative", {"Timeout": "-1"}, None),
    ("bad-MachineDetection", {"MachineDetection": "Sometimes"}, None),
]


@pytest.mark.parametrize("changes,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_create_is_rejected(twigate, changes, code):
    before = count_calls(twigate)
    params = valid_params(**changes)        # a None value drops the parameter
    r = twigate.create_call_raw(**params)
    if code is None:
        assert_twilio_error(r, 400, code_range=(21200, 21299))
    else:
        assert_twilio_error(r, 400, code)
    assert count_calls(twigate) == before, "a call was created by a rejected request"


def test_error_messages(twigate):
    body = assert_twilio_error(
        twigate.create_call_raw(**valid_params(Twiml=None)), 400, 21205)
    assert body["message"].startswith("Url parameter is required"), body
    body = assert_twilio_error(
        twigate.create_call_raw(**valid_params(Twiml=None, Url="not a url")), 400, 21205)
    assert body["message"].startswith("Url is not a valid url"), body
    assert "not a url" in body["message"], body
    body = assert_twilio_error(
        twigate.create_call_raw(**valid_params(To="not-a-number")), 400, 21211)
    assert "not-a-number" in body["message"], body


def test_sdk_surfaces_validation_errors(twigate, client):
    before = count_calls(twigate)
    with pytest.raises(TwilioRestException) as ei:
        client.calls.create(to="not-a-number", from_=DEFAULT_FROM, twiml=HANGUP)
    assert ei.value.status == 400 and ei.value.code == 21211
    assert ei.value.method == "POST"
    with pytest.raises(TwilioRestException) as ei:
        client.calls.create(to=fresh_number(), from_=DEFAULT_FROM)
    assert ei.value.status == 400 and ei.value.code == 21205
    with pytest.raises(TwilioRestException) as ei:
        client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                            status_callback="http://127.0.0.1:9/cb",
                            status_callback_event=["ringing", "nope"])
    assert ei.value.status == 400 and ei.value.code == 21626
    assert count_calls(twigate) == before


@pytest.mark.parametrize("value", ["True", "true", "TRUE", "False", "false"])
def test_booleans_are_case_insensitive(twigate, client, value):
    r = twigate.create_call_raw(**valid_params(Record=value))
    assert r.status_code == 201, r.text
    twigate.wait_for_status(client, r.json()["sid"], TERMINAL)


def test_sdk_record_true_is_accepted(twigate, client):
    # twilio-python 7.7.1 sends Record=True (capital T), contract §1.1.
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                               record=True)
    assert call.sid.startswith("CA")
    twigate.wait_for_status(client, call.sid, TERMINAL)


ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


@pytest.mark.parametrize("form", ["repeated", "space-separated", "sdk"])
def test_status_callback_event_list_forms(twigate, client, receiver, form):
    cb = receiver.url(f"/cb-{form}")
    to = fresh_number()
    if form == "sdk":
        sid = client.calls.create(to=to, from_=DEFAULT_FROM, twiml=HANGUP,
                                  status_callback=cb,
                                  status_callback_event=ALL_EVENTS).sid
    else:
        events = ALL_EVENTS if form == "repeated" else " ".join(ALL_EVENTS)
        r = twigate.create_call_raw(To=to, From=DEFAULT_FROM, Twiml=HANGUP,
                                    StatusCallback=cb, StatusCallbackEvent=events)
        assert r.status_code == 201, r.text
        sid = r.json()["sid"]
    twigate.wait_for_status(client, sid, TERMINAL)
    got = receiver.wait_for_requests(f"/cb-{form}", count=4, call_sid=sid)
    statuses = [r.params["CallStatus"] for r in
                sorted(got, key=lambda r: int(r.params["SequenceNumber"]))]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"], statuses
    receiver.assert_all_valid()
