"""Authentication and account isolation (contract §1 and §13.2): HTTP Basic
with the account SID and auth token, or an SK API key and its secret with
the account SID in the path; everything else is 401 / 20003 with a
WWW-Authenticate challenge, and one account never sees another's calls."""

import base64

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import DEFAULT_FROM, SHORT_TWIML, assert_twilio_error, fresh_number

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def b64(s):
    return base64.b64encode(s.encode()).decode()


@pytest.fixture(scope="module")
def a_call(twigate):
    """A finished call of account a."""
    c = twigate.client("a")
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    twigate.wait_for_status(c, call.sid, TERMINAL)
    return call


def assert_401(resp):
    body = assert_twilio_error(resp, 401, 20003)
    challenge = resp.headers.get("WWW-Authenticate", "")
    assert challenge.lower().startswith("basic"), f"WWW-Authenticate: {challenge!r}"
    return body


def test_no_auth_is_401(twigate):
    base = twigate.account_uri("a")
    assert_401(twigate.http("GET", base + "/Calls.json", auth=None))
    assert_401(twigate.http("GET", base + ".json", auth=None))
    before = len(twigate.client().calls.list(page_size=1000))
    assert_401(twigate.http("POST", base + "/Calls.json", auth=None,
                            data={"To": fresh_number(), "From": DEFAULT_FROM,
                                  "Twiml": SHORT_TWIML}))
    assert len(twigate.client().calls.list(page_size=1000)) == before


def test_wrong_token_is_401(twigate, a_call):
    bad = twigate.client("a", password="0" * 32)
    with pytest.raises(TwilioRestException) as ei:
        bad.calls(a_call.sid).fetch()
    assert ei.value.status == 401 and ei.value.code == 20003
    acct = twigate.accounts["a"]
    assert_401(twigate.http("GET", twigate.account_uri("a") + "/Calls.json",
                            auth=(acct.sid, acct.auth_token + "x")))
    # the other account's token does not open account a
    assert_401(twigate.http("GET", twigate.account_uri("a") + "/Calls.json",
                            auth=(acct.sid, twigate.accounts["b"].auth_token)))


@pytest.mark.parametrize("header", [
    "Bearer abcdef",
    "Basic !!!not-base64!!!",
    "Basic " + b64("no-colon-here"),
    "Basic ",
    "Basic",
    "Digest username=x",
])
def test_malformed_authorization_is_401(twigate, header):
    r = twigate.http("GET", twigate.account_uri("a") + "/Calls.json", auth=None,
                     headers={"Authorization": header})
    assert_401(r)


def test_empty_password_and_empty_user_are_401(twigate):
    acct = twigate.accounts["a"]
    uri = twigate.account_uri("a") + "/Calls.json"
    for user, pw in ((acct.sid, ""), ("", acct.auth_token), (":", ":")):
        r = twigate.http("GET", uri, auth=None,
                         headers={"Authorization": "Basic " + b64(f"{user}:{pw}")})
        assert_401(r)


def test_unknown_account_is_401(twigate):
    ghost = "AC" + "feedface" * 4
    r = twigate.http("GET", f"/2010-04-01/Accounts/{ghost}/Calls.json",
                     auth=(ghost, "0" * 32))
    assert_401(r)


def test_path_sid_must_match_username(twigate):
    """Account a's credentials on account b's path."""
    a = twigate.accounts["a"]
    r = twigate.http("GET", twigate.account_uri("b") + "/Calls.json",
                     auth=(a.sid, a.auth_token))
    assert_401(r)
    r = twigate.http("POST", twigate.account_uri("b") + "/Calls.json",
                     auth=(a.sid, a.auth_token),
                     data={"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML})
    assert_401(r)


def test_api_key_authenticates(twigate, a_call):
    c = twigate.client("a", api_key=True)
    assert c.calls(a_call.sid).fetch().sid == a_call.sid
    assert a_call.sid in [x.sid for x in c.calls.list(to=a_call.to)]
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    assert call.account_sid == twigate.accounts["a"].sid
    twigate.wait_for_status(c, call.sid, TERMINAL)


def test_api_key_wrong_secret_or_wrong_account(twigate, a_call):
    a = twigate.accounts["a"]
    with pytest.raises(TwilioRestException) as ei:
        twigate.client("a", api_key=True, password="1" * 32).calls(a_call.sid).fetch()
    assert ei.value.status == 401 and ei.value.code == 20003
    # the key's secret is the password, not the account's auth token
    assert_401(twigate.http("GET", twigate.account_uri("a") + "/Calls.json",
                            auth=(a.api_key_sid, a.auth_token)))
    # account a's key does not open account b
    r = twigate.http("GET", twigate.account_uri("b") + "/Calls.json",
                     auth=(a.api_key_sid, a.api_key_secret))
    assert r.status_code in (401, 404), r.text
    assert_twilio_error(r, r.status_code)


def test_other_account_cannot_touch_calls(twigate, a_call, client_b):
    sid = a_call.sid
    with pytest.raises(TwilioRestException) as ei:
        client_b.calls(sid).fetch()
    assert (ei.value.status, ei.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as ei:
        client_b.calls(sid).update(status="completed")
    assert (ei.value.status, ei.value.code) == (404, 20404)
    with pytest.raises(TwilioRestException) as ei:
        client_b.calls(sid).delete()
    assert (ei.value.status, ei.value.code) == (404, 20404)
    assert sid not in [c.sid for c in client_b.calls.list(page_size=1000)]
    b_base = twigate.account_uri("b")
    for sub in ("/Events.json", "/Notifications.json"):
        r = twigate.http("GET", f"{b_base}/Calls/{sid}{sub}", account="b")
        assert_twilio_error(r, 404, 20404)
    # the call is untouched for its owner
    assert twigate.client("a").calls(sid).fetch().sid == sid


def test_other_account_credentials_on_owner_path_leak_nothing(twigate, a_call):
    a, b = twigate.accounts["a"], twigate.accounts["b"]
    for path in (f"{twigate.account_uri('a')}/Calls/{a_call.sid}.json",
                 f"{twigate.account_uri('a')}/Calls.json",
                 f"{twigate.account_uri('a')}.json"):
        r = twigate.http("GET", path, auth=(b.sid, b.auth_token))
        assert r.status_code in (401, 404), (path, r.status_code, r.text)
        assert_twilio_error(r, r.status_code)
        for secret in (a.auth_token, a.friendly_name, a_call.to):
            assert secret not in r.text, (path, r.text)
    r = twigate.http("DELETE", f"{twigate.account_uri('a')}/Calls/{a_call.sid}.json",
                     auth=(b.sid, b.auth_token))
    assert r.status_code in (401, 404), r.text
    assert twigate.client("a").calls(a_call.sid).fetch().sid == a_call.sid


def test_healthz_needs_no_auth(twigate):
    assert twigate.healthz().status_code == 200


def test_lowercase_basic_scheme_works(twigate, a_call):
    """Issue 16 §2: the auth scheme is case-insensitive (RFC 9110 §11.1)."""
    a = twigate.accounts["a"]
    uri = twigate.account_uri("a") + f"/Calls/{a_call.sid}.json"
    for scheme in ("basic", "BASIC", "bAsIc"):
        r = twigate.http("GET", uri, auth=None,
                         headers={"Authorization": f"{scheme} " + b64(f"{a.sid}:{a.auth_token}")})
        assert r.status_code == 200, (scheme, r.status_code, r.text)
        assert r.json()["sid"] == a_call.sid
    # extra blanks between the scheme and the credentials are tolerated too
    r = twigate.http("GET", uri, auth=None,
                     headers={"Authorization": "basic   " + b64(f"{a.sid}:{a.auth_token}")})
    assert r.status_code == 200, r.text


def test_password_with_embedded_nul_does_not_match_its_prefix(twigate, a_call):
    """Issue 16 §2: "token\\0anything" is not the token. Before, the decoded
    password was cut at the NUL and matched."""
    a = twigate.accounts["a"]
    uri = twigate.account_uri("a") + f"/Calls/{a_call.sid}.json"
    for pw in (a.auth_token + "\0", a.auth_token + "\0garbage", a.auth_token + "\0" + a.auth_token):
        cred = base64.b64encode(f"{a.sid}:{pw}".encode()).decode()
        assert_401(twigate.http("GET", uri, auth=None,
                                headers={"Authorization": "Basic " + cred}))
    cred = base64.b64encode(f"{a.api_key_sid}:{a.api_key_secret}\0x".encode()).decode()
    assert_401(twigate.http("GET", uri, auth=None, headers={"Authorization": "Basic " + cred}))
    # a NUL in the user name neither
    cred = base64.b64encode(f"{a.sid}\0x:{a.auth_token}".encode()).decode()
    assert_401(twigate.http("GET", uri, auth=None, headers={"Authorization": "Basic " + cred}))
