"""The cache of ended calls' JSON (db.call_cache_entries, docs/architecture.md):
what a client polling GET .../Calls/{Sid}.json sees must be exactly what the
database says, whether the body came from the cache or not.

The list endpoint never uses the cache, so a call's item in the list is the
reference body a fetch must equal. The cache's hit counter (from /metrics)
proves a check really exercised a cached body."""

import re
import threading

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import (settle_call, DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, assert_call_json,
                     assert_matches_schema, assert_twilio_error, fresh_number, wait_for)

CALL = "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json"
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
ORDER = {"queued": 0, "ringing": 1, "in-progress": 2, "completed": 3, "busy": 3,
         "failed": 3, "no-answer": 3, "canceled": 3}


def counter(tg, name):
    """An unlabelled sample of /metrics (test_ops_metrics.py parses the whole
    exposition strictly)."""
    r = tg.http("GET", "/metrics", auth=None)
    assert r.status_code == 200, r.text[:200]
    m = re.search(rf"^{name} (\S+)$", r.text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def fetch_raw(tg, sid, account="a"):
    return tg.http("GET", f"{tg.account_uri(account)}/Calls/{sid}.json", account=account)


def fetch_ok(tg, sid, account="a"):
    r = fetch_raw(tg, sid, account)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0].strip() == "application/json"
    body = r.json()
    assert_matches_schema(CALL, "get", 200, body)
    return body


def listed(tg, sid, account="a"):
    """The call as the (uncached) list endpoint renders it."""
    r = tg.http("GET", f"{tg.account_uri(account)}/Calls.json?PageSize=1000", account=account)
    assert r.status_code == 200, r.text
    items = [c for c in r.json()["calls"] if c["sid"] == sid]
    assert len(items) == 1, f"{sid} not in the list"
    return items[0]


def settled(tg, sid):
    """Waits until everything the call causes has landed (late writes after
    the end, such as recording events: harness.settle_call's barrier) and
    returns it as listed."""
    settle_call(tg, sid)
    return listed(tg, sid)


def ended_call(tg, twiml=SHORT_TWIML):
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=twiml).sid
    tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    return sid, settled(tg, sid)


@pytest.fixture(scope="module")
def cached(make_twigate_module):
    """A daemon with the cache on (the default size) and nothing else sharing
    its counters."""
    return make_twigate_module()


def test_polling_through_a_call_ends_on_its_final_state(cached):
    """Pollers fetch as fast as they can from before the call is answered
    until well after it ended: every body is valid, statuses only move
    forward, and once the row has settled every fetch - cached or not -
    equals what the database renders."""
    tg = cached
    acct = tg.accounts["a"]
    c = tg.client("a")
    to = fresh_number()
    sid = c.calls.create(to=to, from_=DEFAULT_FROM,
                         twiml='<Response><Say>One moment</Say><Pause length="2"/>'
                               '<Say>Goodbye</Say></Response>').sid
    stop = threading.Event()
    seen = {0: [], 1: []}
    errors = []

    def poll(i):
        try:
            while not stop.is_set():
                body = fetch_ok(tg, sid)
                seen[i].append(body["status"])
        except Exception as e:   # surfaced in the main thread
            errors.append(e)

    threads = [threading.Thread(target=poll, args=(i,)) for i in seen]
    for t in threads:
        t.start()
    try:
        tg.wait_for_status(c, sid, TERMINAL, timeout=20)
        final = settled(tg, sid)
        # Pollers keep hitting the ended call: a few more answers each.
        marks = {i: len(v) for i, v in seen.items()}
        wait_for(lambda: errors or all(len(seen[i]) >= marks[i] + 3 for i in seen), 10,
                 message="the pollers stopped answering")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors
    for statuses in seen.values():
        assert statuses, "a poller never got an answer"
        ranks = [ORDER[s] for s in statuses]
        assert ranks == sorted(ranks), f"status went backwards: {statuses}"
        assert statuses[-1] == final["status"], (statuses[-1], final["status"])
    assert {"queued", "ringing", "in-progress"} & set(seen[0] + seen[1]), \
        "the pollers never saw the call live"
    assert final["status"] == "completed"
    assert final["end_time"] is not None and final["duration"] is not None

    hits = counter(tg, "twigate_call_cache_hits_total")
    for _ in range(5):
        body = fetch_ok(tg, sid)
        assert body == final
        assert_call_json(body, acct.sid, to=to, from_=DEFAULT_FROM)
    assert counter(tg, "twigate_call_cache_hits_total") >= hits + 5, "not served from the cache"
    # The SDK reads the same.
    sdk = c.calls(sid).fetch()
    assert (sdk.status, sdk.duration, sdk.sid) == ("completed", final["duration"], sid)


def test_hangup_of_a_polled_live_call_shows_at_once(cached):
    """A live call fetched many times, then hung up through the API: the very
    next fetch shows it completed (the hang-up's write invalidated whatever
    the polls had put in flight)."""
    tg = cached
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML).sid
    tg.wait_for_status(c, sid, "in-progress", timeout=15)
    for _ in range(20):
        assert fetch_ok(tg, sid)["status"] == "in-progress"
    updated = c.calls(sid).update(status="completed")
    assert updated.status == "completed"
    assert fetch_ok(tg, sid)["status"] == "completed"
    final = settled(tg, sid)
    for _ in range(3):
        assert fetch_ok(tg, sid) == final


def test_delete_then_fetch_is_404(cached):
    tg = cached
    c = tg.client("a")
    sid, final = ended_call(tg)
    hits = counter(tg, "twigate_call_cache_hits_total")
    assert fetch_ok(tg, sid) == final
    assert fetch_ok(tg, sid) == final
    assert counter(tg, "twigate_call_cache_hits_total") >= hits + 1, "the call was never cached"
    assert c.calls(sid).delete() is True
    r = fetch_raw(tg, sid)
    body = assert_twilio_error(r, 404, 20404)
    assert sid in body["message"]
    with pytest.raises(TwilioRestException) as e:
        c.calls(sid).fetch()
    assert e.value.status == 404
    # And it stays gone.
    assert_twilio_error(fetch_raw(tg, sid), 404, 20404)


def test_another_account_gets_404_even_when_cached(cached):
    """Account b asking for a's cached call gets exactly the 404 it gets for
    a SID that does not exist at all."""
    tg = cached
    sid, final = ended_call(tg)
    assert fetch_ok(tg, sid) == final
    hits = counter(tg, "twigate_call_cache_hits_total")
    assert fetch_ok(tg, sid) == final
    assert counter(tg, "twigate_call_cache_hits_total") == hits + 1, "a's fetch was not a hit"

    acct_b = tg.accounts["b"]
    r = fetch_raw(tg, sid, account="b")
    got = assert_twilio_error(r, 404, 20404)
    absent = "CA" + "0" * 32
    want = assert_twilio_error(fetch_raw(tg, absent, account="b"), 404, 20404)
    assert got == dict(want, message=want["message"].replace(absent, sid))
    assert acct_b.sid in got["message"]
    with pytest.raises(TwilioRestException) as e:
        tg.client("b").calls(sid).fetch()
    assert e.value.status == 404
    # a still reads its call.
    assert fetch_ok(tg, sid) == final


def test_cache_disabled_by_config_still_works(make_twigate):
    tg = make_twigate(overrides={"db.call_cache_entries": 0})
    c = tg.client("a")
    sid, final = ended_call(tg)
    for _ in range(5):
        assert fetch_ok(tg, sid) == final
    assert c.calls(sid).fetch().status == final["status"]
    assert counter(tg, "twigate_call_cache_hits_total") == 0
    assert counter(tg, "twigate_call_cache_entries") == 0
    assert_twilio_error(fetch_raw(tg, sid, account="b"), 404, 20404)
    assert c.calls(sid).delete() is True
    assert_twilio_error(fetch_raw(tg, sid), 404, 20404)
