"""The console's Queue & budget panel (issue 20 with issue 19's budget,
docs/console.md): GET /console/api/queue over real HTTP on a simulator key
as strict as Kaphila (`sim.rate_limit` requests per `sim.rate_window_ms`),
and the panel itself in Chromium (tests/node/console_budget_test.js).

The queue is filled the way tests/integration/test_budget.py does it: with a
limit of 3 requests per window, a first call that stays up holds the key's
whole budget (its /makecall and the reserve for its command and hang-up),
so every later call of the key waits in `queued`. The window is long enough
that nothing is dialled while a test looks."""
import hashlib
import os
import subprocess

import pytest

from harness import DEFAULT_FROM, LIVE_TWIML, fresh_number, wait_for
from harness.oas import REPO_ROOT

LIMIT = 3
WINDOW_MS = 120000
NODE_DIR = REPO_ROOT / "tests" / "node"
CHROMIUM = "/usr/bin/chromium"


def strict(**extra):
    o = {"console.enabled": True, "sim.rate_limit": LIMIT, "sim.rate_window_ms": WINDOW_MS,
         "kaphila.rate_window_ms": WINDOW_MS}
    o.update(extra)
    return o


def label(key):
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def queue(tg, name):
    r = tg.http("GET", "/console/api/queue", account=name)
    assert r.status_code == 200, r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    for acct in tg.accounts.values():   # no key, of any account, ever
        assert acct.kaphila_key not in r.text
    return r.json()


def learned(tg, name):
    """Wait until twigate knows the key's limit from the simulator's /api/me.
    Until that first answer arrives twigate assumes Kaphila's default (100
    per window, docs/kaphila.md), so a call created before it would be dialled
    at once, and a second call too (seen under ASan on a loaded machine)."""
    def ok():
        b = (queue(tg, name)["key"] or {}).get("budget")
        return b if b and b["limit"] == LIMIT else None
    r = tg.http("GET", f"{tg.account_uri(name)}/Balance.json", account=name)
    assert r.status_code == 200, r.text   # asks /api/me for the key
    return wait_for(ok, timeout=15, message=f"twigate never learned the limit of {LIMIT}")


def hold(tg, receiver, name):
    """A call of account name that stays up, holding its key's budget."""
    learned(tg, name)
    receiver.set("/hold", twiml=LIVE_TWIML)
    c = tg.client(name)
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/hold"))
    tg.wait_for_status(c, call.sid, "in-progress", timeout=15)
    return call.sid


def enqueue(tg, receiver, name, n):
    c = tg.client(name)
    calls = [c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/hold"))
             for _ in range(n)]
    assert all(x.status == "queued" for x in calls)
    return [x.sid for x in calls]


def published(tg, name, queued):
    """The engine publishes the figures at least every second: wait until
    they show `queued` calls waiting on the account's key."""
    def ok():
        q = queue(tg, name)
        b = (q["key"] or {}).get("budget")
        return q if b and b["queued_calls"] == queued else None
    return wait_for(ok, timeout=10, message=f"the budget never showed {queued} queued calls")


def cleanup(tg, queued):
    for name, sids in queued.items():
        c = tg.client(name)
        for sid in sids:
            if c.calls(sid).fetch().status == "queued":
                c.calls(sid).update(status="canceled")
    tg.end_live_calls()


def test_queue_api_shows_the_accounts_queue_and_its_keys_budget(make_twigate, receiver):
    tg = make_twigate(overrides=strict())
    a, b = tg.accounts["a"], tg.accounts["b"]
    hold(tg, receiver, "a")
    a_sids = enqueue(tg, receiver, "a", 3)
    hold(tg, receiver, "b")
    b_sids = enqueue(tg, receiver, "b", 1)
    try:
        q = published(tg, "a", 3)
        assert q["account_sid"] == a.sid
        k = q["key"]
        assert k["label"] == label(a.kaphila_key) and k["accounts"] == 1
        bud = k["budget"]
        assert bud["limit"] == LIMIT and bud["window_ms"] == WINDOW_MS
        # The held call spent its /makecall and reserves the rest: nothing left.
        assert bud["used"] >= 1 and bud["left"] == LIMIT - bud["used"] and bud["live"] == 1
        # The engine's reserve: 2 for the live call (its next command and its
        # hang-up) plus the commands waiting; the queue waits because left
        # does not exceed it.
        assert bud["reserved"] == 2 * bud["live"] + bud["waiting_commands"]
        assert bud["left"] <= bud["reserved"]
        assert bud["oldest_wait_ms"] > 0 and bud["received_429"] == 0 and not bud["paused"]
        assert bud["credits"] >= 0
        # The account's own queued calls, next to be dialled first, with their wait.
        calls = q["queue"]["calls"]
        assert [c["sid"] for c in calls] == a_sids
        assert q["queue"]["count"] == 3 and q["queue"]["complete"]
        waits = [c["wait_ms"] for c in calls]
        assert waits == sorted(waits, reverse=True) and waits[0] > 0
        assert calls[0]["to"] and calls[0]["from"] == DEFAULT_FROM
        # Account B: its own key, its own queue; none of A's calls.
        qb = published(tg, "b", 1)
        assert qb["key"]["label"] == label(b.kaphila_key)
        assert [c["sid"] for c in qb["queue"]["calls"]] == b_sids
        r = tg.http("GET", "/console/api/queue", account="b")
        assert not any(sid in r.text for sid in a_sids)
    finally:
        cleanup(tg, {"a": a_sids, "b": b_sids})


def test_a_shared_key_shows_the_shared_budget_and_only_your_calls(make_twigate, accounts,
                                                                  receiver):
    key = accounts["a"].kaphila_key
    tg = make_twigate(overrides=strict(**{"account.b.kaphila_key": key}))
    hold(tg, receiver, "a")
    a_sids = enqueue(tg, receiver, "a", 2)
    b_sids = enqueue(tg, receiver, "b", 1)
    try:
        qa, qb = published(tg, "a", 3), published(tg, "b", 3)
        for q in (qa, qb):
            assert q["key"]["label"] == label(key) and q["key"]["accounts"] == 2
        assert [c["sid"] for c in qa["queue"]["calls"]] == a_sids
        assert [c["sid"] for c in qb["queue"]["calls"]] == b_sids
    finally:
        cleanup(tg, {"a": a_sids, "b": b_sids})


def test_queue_api_lists_the_next_100_and_counts_the_rest(make_twigate, receiver):
    tg = make_twigate(overrides=strict())
    hold(tg, receiver, "a")
    sids = enqueue(tg, receiver, "a", 105)
    try:
        q = published(tg, "a", 105)["queue"]
        assert q["count"] == 105 and q["complete"] and q["shown_max"] == 100
        assert [c["sid"] for c in q["calls"]] == sids[:100]
    finally:
        cleanup(tg, {"a": sids})


def test_queue_api_needs_the_login(make_twigate):
    tg = make_twigate(overrides={"console.enabled": True})
    r = tg.http("GET", "/console/api/queue", auth=None)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="twigate console"'
    r = tg.http("GET", "/console/api/queue", auth=(tg.accounts["a"].sid, "wrong"))
    assert r.status_code == 401
    # An unlimited key (the simulator's default): the figures say so.
    q = tg.http("GET", "/console/api/queue").json()
    assert q["queue"] == {"calls": [], "count": 0, "complete": True, "shown_max": 100}


def test_queue_panel_in_chromium(make_twigate, receiver):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (scripts/install-deps.sh test)")
    assert (NODE_DIR / "node_modules" / "puppeteer-core").exists(), \
        "npm puppeteer-core missing (scripts/install-deps.sh test)"
    tg = make_twigate(overrides=strict())
    a = tg.accounts["a"]
    hold(tg, receiver, "a")
    sids = enqueue(tg, receiver, "a", 4)
    try:
        published(tg, "a", 4)
        env = dict(os.environ, CHROMIUM=CHROMIUM,
                   SCREENSHOTS=os.environ.get("CONSOLE_SCREENSHOTS", ""))
        p = subprocess.Popen(["node", "console_budget_test.js", tg.base_url, a.sid,
                              a.auth_token, ",".join(sids), str(LIMIT)],
                             cwd=NODE_DIR, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        assert p.returncode == 0, (f"console_budget_test.js exited {p.returncode}\n--- stdout\n"
                                   f"{out}\n--- stderr\n{err}\n--- twigate\n{tg.log_tail(30)}")
        assert "console_budget_test: OK" in out
    finally:
        cleanup(tg, {"a": sids})
