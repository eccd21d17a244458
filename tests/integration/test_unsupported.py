"""What twigate does not serve, and abusive requests: always a Twilio-shaped
JSON error (never HTML), and the daemon stays up."""

import pytest
import requests

from harness import DEFAULT_FROM, SHORT_TWIML, assert_twilio_error, fresh_number

MAX_BODY = 16384
MAX_PARAMS = 64


@pytest.fixture(scope="module")
def tg(make_twigate_module):
    return make_twigate_module(overrides={"limits.max_body_bytes": MAX_BODY,
                                          "limits.max_params": MAX_PARAMS})


@pytest.fixture(autouse=True)
def still_up(tg):
    yield
    assert tg.healthz().status_code == 200, "daemon stopped answering /healthz"
    assert tg.running, f"daemon died; log:\n{tg.log_tail()}"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_messages_is_json_404(tg, method):
    kw = {"data": {"To": fresh_number(), "From": DEFAULT_FROM, "Body": "hi"}} \
        if method == "POST" else {}
    r = tg.http(method, tg.account_uri() + "/Messages.json", **kw)
    body = assert_twilio_error(r, 404, 20404)
    assert "Messages" in body["message"] and "support" in body["message"].lower(), body


def test_sdk_messages_raises_404(tg):
    from twilio.base.exceptions import TwilioRestException
    c = tg.client()
    with pytest.raises(TwilioRestException) as ei:
        c.messages.create(to=fresh_number(), from_=DEFAULT_FROM, body="hi")
    assert ei.value.status == 404 and ei.value.code == 20404


@pytest.mark.parametrize("path", [
    "/2010-04-01/Nope.json",
    "/2010-04-01/Accounts/{AC}/Bogus.json",
    "/2010-04-01/Accounts/{AC}/Calls/{CA}/Nothing.json",
    "/2010-04-01/Accounts/{AC}/Conferences.json",
    "/2010-04-01/Accounts/{AC}/Calls",
])
def test_unknown_paths_are_json_errors(tg, path):
    path = path.replace("{AC}", tg.accounts["a"].sid).replace("{CA}", "CA" + "1" * 32)
    r = tg.http("GET", path)
    assert r.status_code in (404, 405), (path, r.status_code, r.text)
    assert_twilio_error(r, r.status_code)


def test_wrong_method_is_json_error(tg):
    r = tg.http("PUT", tg.account_uri() + "/Calls.json", data={"x": "1"})
    assert r.status_code in (404, 405), r.text
    assert_twilio_error(r, r.status_code)


def test_body_over_limit_is_413(tg):
    before = len(tg.client().calls.list(page_size=1000))
    big = "<Response><Say>" + "x" * (MAX_BODY + 1024) + "</Say></Response>"
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=big)
    assert_twilio_error(r, 413)
    assert len(tg.client().calls.list(page_size=1000)) == before


def test_body_just_under_limit_is_accepted(tg):
    # The same kind of request, a little under the cap: accepted (the padding
    # is an unknown parameter, which Twilio ignores - 20001 is a warning).
    pad = "p" * (MAX_BODY - 1024)
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM,
                           Twiml="<Response><Hangup/></Response>", Padding=pad)
    assert r.status_code == 201, r.text
    tg.wait_for_status(tg.client(), r.json()["sid"],
                       {"completed", "busy", "failed", "no-answer", "canceled"})


def test_too_many_params_is_400(tg):
    data = [("To", fresh_number()), ("From", DEFAULT_FROM), ("Twiml", SHORT_TWIML)]
    data += [(f"X{i}", "1") for i in range(MAX_PARAMS + 10)]
    r = tg.http("POST", tg.account_uri() + "/Calls.json", data=data)
    assert_twilio_error(r, 400)


def test_too_many_query_params_is_400(tg):
    # limits.max_params caps query strings as well as form bodies.
    params = [(f"X{i}", "1") for i in range(MAX_PARAMS + 10)]
    r = tg.http("GET", tg.account_uri() + "/Calls.json", params=params)
    assert_twilio_error(r, 400)
    few = [(f"X{i}", "1") for i in range(MAX_PARAMS - 10)]
    assert tg.http("GET", tg.account_uri() + "/Calls.json", params=few).status_code == 200


@pytest.mark.parametrize("n", [1000, 3000])
def test_huge_query_string_is_answered(tg, n):
    """A request line with thousands of parameters must get a 4xx answer
    promptly - not a connection left hanging until the client gives up."""
    params = [(f"X{i}", "1") for i in range(n)]
    try:
        r = tg.http("GET", tg.account_uri() + "/Calls.json", params=params, timeout=3)
    except requests.exceptions.Timeout:
        pytest.fail(f"no response within 3 s to a GET with {n} query parameters "
                    f"(connection left hanging)")
    assert 400 <= r.status_code < 500, r.status_code


def test_huge_header_is_answered(tg):
    try:
        r = tg.http("GET", tg.account_uri() + "/Calls.json", timeout=3,
                    headers={f"X-Filler-{i}": "v" * 100 for i in range(400)})
    except requests.exceptions.Timeout:
        pytest.fail("no response within 3 s to a request with 40 KB of headers")
    assert r.status_code in (200, 400, 413, 431), r.status_code


@pytest.mark.parametrize("ctype,payload", [
    ("application/json", b'{"To": "+14155550123", "From": "+15005550006"}'),
    ("text/plain", b"To=%2B14155550123&From=%2B15005550006&Twiml=x"),
    ("multipart/form-data; boundary=zz",
     b"--zz\r\nContent-Disposition: form-data; name=\"To\"\r\n\r\n+14155550123\r\n--zz--\r\n"),
])
def test_non_form_post_is_rejected(tg, ctype, payload):
    before = len(tg.client().calls.list(page_size=1000))
    r = tg.http("POST", tg.account_uri() + "/Calls.json", data=payload,
                headers={"Content-Type": ctype})
    assert r.status_code in (400, 415), r.text
    assert_twilio_error(r, r.status_code)
    assert len(tg.client().calls.list(page_size=1000)) == before


def test_malformed_form_encoding_is_400(tg):
    r = tg.http("POST", tg.account_uri() + "/Calls.json", data=b"To=%ZZ&From=%2",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_twilio_error(r, 400)


def test_get_with_body_and_garbage_path(tg):
    for path in ("/2010-04-01/Accounts/../../etc/passwd", "/2010-04-01/%00",
                 "/2010-04-01/Accounts/" + "A" * 5000 + ".json"):
        r = tg.http("GET", path)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        if r.headers.get("Content-Type", "").startswith("application/json"):
            assert_twilio_error(r, r.status_code)
