"""Accounts for Kaphila-key users (issue 15; accounts.kaphila_keys; docs/security.md
§2): the official SDK with any AC SID and a Kaphila API key as its auth token,
against the standalone simulator (whose /api/me answers like Kaphila's), with
several keys. The key signs the webhooks and drives the account's calls; the
SID is bound to its first key for good (also across a restart); wrong keys
are cached and counted per client address, so a flood does not turn twigate
into a key-checking oracle against Kaphila."""

import base64
import http.client
import json
import secrets

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from harness import DEFAULT_FROM, SHORT_TWIML, KaphilaSim, WebhookReceiver, fresh_number

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


def new_sid():
    return "AC" + secrets.token_hex(16)


def new_key():
    return "ak_test_" + secrets.token_hex(12)


@pytest.fixture
def keys():
    return [new_key() for _ in range(3)]


@pytest.fixture
def sim(tmp_path_factory, accounts, keys):
    s = KaphilaSim(tmp_path_factory.mktemp("kk-sim"),
                   [a.kaphila_key for a in accounts.values()] + keys)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def tg(make_twigate, sim):
    return make_twigate(overrides={"accounts.kaphila_keys": True}, external_sim=sim)


def sdk(tg, sid, key):
    c = Client(sid, key, sid, http_client=TwilioHttpClient(timeout=10))
    c.api.base_url = tg.base_url
    return c


def raw_get(tg, path, sid, key, source="127.0.0.1"):
    """A GET with Basic credentials from a chosen loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", tg.port, timeout=10,
                                      source_address=(source, 0))
    cred = base64.b64encode(f"{sid}:{key}".encode()).decode()
    conn.request("GET", path, headers={"Authorization": "Basic " + cred})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def status_of(tg, sid, key):
    """Status and Twilio code of a Calls list with these credentials."""
    r = tg.http("GET", f"/2010-04-01/Accounts/{sid}/Calls.json", auth=(sid, key))
    return r.status_code, (r.json().get("code") if r.status_code >= 400 else None)


def key_checks(tg):
    text = tg.http("GET", "/metrics", auth=None).text
    out = {}
    for line in text.splitlines():
        if line.startswith("twigate_kaphila_key_checks_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            out[outcome] = float(line.split()[-1])
    return out


def test_simulator_api_me_answers_like_kaphila(sim, keys):
    s = requests.Session()
    s.trust_env = False
    r = s.get(sim.url + "/api/me", headers={"Authorization": f"Bearer {keys[0]}"}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    assert set(body["apiKey"]) == {"id", "keyId", "name", "credits", "totalCalls",
                                   "successfulCalls", "rateLimit", "createdAt", "lastUsed"}
    r = s.get(sim.url + "/api/me", headers={"Authorization": "Bearer ak_nobody"}, timeout=5)
    assert r.status_code == 401
    assert r.json()["success"] is False and r.json()["error"]


def test_kaphila_key_is_an_account_signing_webhooks_with_the_key(tg, keys):
    sid, key = new_sid(), keys[0]
    rcv = WebhookReceiver({sid: key})
    try:
        c = sdk(tg, sid, key)
        call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                              status_callback=rcv.url("/status"),
                              status_callback_event=["initiated", "completed"])
        assert call.account_sid == sid
        done = tg.wait_for_status(c, call.sid, TERMINAL, timeout=15)
        assert done.status == "completed"
        got = rcv.wait_for_requests("/status", 2, call_sid=call.sid)
        assert {r.params["AccountSid"] for r in got} == {sid}
        rcv.assert_all_valid()           # signed with the Kaphila key
        acct = c.api.accounts(sid).fetch()
        assert acct.sid == sid and acct.auth_token == key
        assert [x.sid for x in c.calls.list(limit=20)] == [call.sid]
        # The call was made on Kaphila with that key: the simulator knows it
        # under the key's calls.
        s = requests.Session()
        s.trust_env = False
        logs = s.post(tg.sim_url + "/api/call-logs", json={}, timeout=5,
                      headers={"Authorization": f"Bearer {key}"}).json()
        assert logs["total_count"] == 1, logs
    finally:
        rcv.close()
    # A file account's credentials still work and see none of it.
    a = tg.client("a")
    assert call.sid not in [x.sid for x in a.calls.list(limit=50)]


def test_sid_is_bound_to_its_first_key_across_a_restart(tg, keys):
    sid = new_sid()
    assert sdk(tg, sid, keys[0]).calls.list(limit=1) == []
    # keys[1] is a good Kaphila key, but the SID is taken.
    assert status_of(tg, sid, keys[1]) == (401, 20003)
    # The second key makes its own account under another SID.
    other = new_sid()
    assert sdk(tg, other, keys[1]).api.accounts(other).fetch().auth_token == keys[1]
    tg.restart()
    assert status_of(tg, sid, keys[1]) == (401, 20003)
    assert sdk(tg, sid, keys[0]).api.accounts(sid).fetch().auth_token == keys[0]


def test_wrong_key_is_401_and_its_verdict_is_cached(tg):
    sid, bad = new_sid(), new_key()
    path = f"/2010-04-01/Accounts/{sid}/Calls.json"
    for _ in range(5):
        status, body = raw_get(tg, path, sid, bad, source="127.0.0.3")
        assert status == 401, body
    # Five attempts, one question to Kaphila.
    assert key_checks(tg).get("refused") == 1
    assert key_checks(tg).get("accepted") is None


def test_failed_attempts_are_rate_limited_per_client_address(tg, keys):
    sid = new_sid()
    path = f"/2010-04-01/Accounts/{sid}/Calls.json"
    statuses = [raw_get(tg, path, sid, new_key(), source="127.0.0.4")[0] for _ in range(30)]
    assert statuses[:10] == [401] * 10, statuses
    assert set(statuses[10:]) == {429}, statuses
    status, body = raw_get(tg, path, sid, new_key(), source="127.0.0.4")
    assert status == 429 and json.loads(body)["code"] == 20429, body
    # Only the first ten reached Kaphila; the rest were refused without.
    assert key_checks(tg).get("refused") == 10
    # Even a good key is refused from that address for now; others go on.
    assert raw_get(tg, path, sid, keys[2], source="127.0.0.4")[0] == 429
    assert raw_get(tg, path, sid, keys[2], source="127.0.0.5")[0] == 200


def test_kaphila_down_is_503_and_not_cached(tg, sim, keys):
    sid = new_sid()
    # On this key only: twigate's budget also asks /api/me (the rate limit and
    # credits of the keys it uses), and an unkeyed injection could go to one of
    # those reads instead of the credential check (seen once in make check).
    tg.sim_fail(503, count=1, endpoint="/api/me", key=keys[2])
    assert status_of(tg, sid, keys[2]) == (503, 20503)
    assert sdk(tg, sid, keys[2]).calls.list(limit=1) == []


def test_off_by_default(make_twigate, sim, keys):
    tg = make_twigate(external_sim=sim)
    sid = new_sid()
    with pytest.raises(TwilioRestException) as ei:
        sdk(tg, sid, keys[0]).api.accounts(sid).fetch()
    assert (ei.value.status, ei.value.code) == (401, 20003)
    assert status_of(tg, sid, keys[0]) == (401, 20003)
    assert key_checks(tg) == {}
