"""Operations, what a monitor sees (issue 7, docs/operations.md: Health and
readiness, Metrics): /healthz and /readyz (open, tiny, fast; readiness
follows Kaphila), and /metrics scraped and parsed strictly (harness/prom.py):
the bearer token, the families issue 7 asks for with their types and labels,
and exact deltas of every counter under a known workload (calls of each
outcome, callbacks held up and failing, a 401, a 429 from Kaphila), the call
cache's counters, WAL checkpoints and timer lateness.

Every test starts the daemons it needs (make_twigate), so exact metric deltas
belong to that test alone."""

import os
import time

import pytest

from harness import DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, fresh_number, free_port, wait_for
from harness.db import sqlite_only
from harness.ops import ALL_EVENTS, TERMINAL, session
from harness.prom import Exposition, ExpositionError


def test_exposition_parser_rejects_malformed_text():
    """The parser of harness/prom.py, used below, is strict: each of these is
    refused."""
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
            "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n"
            "h_seconds_sum 0.3\nh_seconds_count 2\n")
    Exposition(good)
    bad = [
        good[:-1],                                                    # no final newline
        good.replace('a_total{x="1"} 2', 'a_total{x="1",x="2"} 2'),    # repeated label
        good.replace('a_total{x="1"} 2', 'a_total{x=1} 2'),            # unquoted value
        good.replace('a_total{x="1"} 2', 'a_total{x="\\q"} 2'),        # bad escape
        good.replace('a_total{x="1"} 2', 'a_total{x="1"} two'),        # bad value
        good.replace('a_total{x="1"} 2', 'a_total{x="1"} -1'),         # negative counter
        good.replace('a_total{x="1"} 2\n', 'a_total{x="1"} 2\na_total{x="1"} 3\n'),  # twice
        good + 'a_total{x="2"} 2\n',                                  # family split in two
        good.replace("# TYPE a_total counter\n", ""),                  # no TYPE
        good.replace("h_seconds_bucket{le=\"+Inf\"} 2\n", ""),         # no +Inf bucket
        good.replace('h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="0.1"} 3'),
        good.replace("h_seconds_count 2", "h_seconds_count 3"),        # count != +Inf
        good.replace("h_seconds_sum 0.3\n", ""),                       # no _sum
        good.replace('h_seconds_bucket{le="0.1"} 1\n',                # le not increasing
                     'h_seconds_bucket{le="0.5"} 1\nh_seconds_bucket{le="0.1"} 1\n'),
        good + "# TYPE a_total counter\n",                            # second TYPE
        good.replace("# TYPE a_total counter", "# TYPE a_total countr"),
    ]
    for text in bad:
        with pytest.raises(ExpositionError):
            Exposition(text)


# ====================================================================
# Health and readiness
# ====================================================================

def test_healthz_and_readyz_are_tiny_fast_and_open(make_twigate):
    tg = make_twigate(overrides={"metrics.token": "m" + os.urandom(8).hex()})
    s = session()
    # Ready once the first Kaphila probe has answered, shortly after start.
    wait_for(lambda: s.get(tg.base_url + "/readyz", timeout=5).status_code == 200, 5,
             message="/readyz never became ready")
    for path, body in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
        for auth in (None, ("ACnobody", "wrong")):     # no credentials, or bad ones
            t0 = time.monotonic()
            r = s.get(tg.base_url + path, auth=auth, timeout=5)
            elapsed = time.monotonic() - t0
            assert r.status_code == 200, (path, r.status_code, r.text)
            assert r.text == body, (path, r.text)
            assert int(r.headers["Content-Length"]) < 64
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "WWW-Authenticate" not in r.headers
            assert elapsed < 1.0, f"{path} took {elapsed:.3f}s"
        assert s.post(tg.base_url + path, timeout=5).status_code == 405


def test_readyz_fails_when_kaphila_is_unreachable(make_twigate, kaphila_sim):
    """Issue 7: /readyz is ready only with the database usable and Kaphila
    reachable (or the built-in simulator running)."""
    tg = make_twigate(external_sim=kaphila_sim)
    wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 200, 5,
             message="/readyz never became ready")
    kaphila_sim.kill9()
    try:
        wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 503, 6,
                 message="/readyz still 200 with Kaphila down")
        assert tg.http("GET", "/healthz", auth=None).status_code == 200, \
            "liveness must not depend on Kaphila"
    finally:
        kaphila_sim.start()
    wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 200, 10,
             message="/readyz did not recover with Kaphila back")


# ====================================================================
# Metrics
# ====================================================================

# Families issue 7 asks for, with their type and exact label names.
REQUIRED_FAMILIES = {
    "twigate_http_requests_total": ("counter", {"route", "status"}),
    "twigate_http_request_seconds": ("histogram", {"route"}),
    "twigate_calls_total": ("counter", {"status"}),
    "twigate_live_calls": ("gauge", set()),
    "twigate_kaphila_requests_total": ("counter", {"endpoint", "outcome"}),
    "twigate_kaphila_request_seconds": ("histogram", {"endpoint"}),
    "twigate_webhooks_total": ("counter", {"kind", "outcome"}),
    "twigate_webhook_seconds": ("histogram", {"kind"}),
    "twigate_twiml_fetch_seconds": ("histogram", set()),
    "twigate_outbox_pending": ("gauge", set()),
    "twigate_outbox_oldest_seconds": ("gauge", set()),
    "twigate_kaphila_events_total": ("counter", {"event"}),
    "twigate_notifications_total": ("counter", {"code"}),
    "twigate_sqlite_busy_total": ("counter", set()),
    "twigate_sqlite_checkpoints_total": ("counter", {"trigger"}),
    "twigate_sqlite_wal_pages": ("gauge", set()),
    "twigate_metrics_dropped_total": ("counter", set()),
}


def _scrape(tg, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = tg.http("GET", "/metrics", auth=None, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Exposition(r.text)


def _assert_shapes(m):
    for name, fam in m.families.items():
        assert name.startswith("twigate_"), name
        assert fam["help"] and fam["help"].strip(), f"{name} has an empty HELP"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
        if fam["type"] == "histogram":
            assert name.endswith("_seconds"), f"histogram {name} should be in seconds"
            # One fixed bucket layout per family.
            layouts = {}
            for sample, labels, _ in fam["samples"]:
                if sample.endswith("_bucket"):
                    rest = frozenset((k, v) for k, v in labels.items() if k != "le")
                    layouts.setdefault(rest, []).append(labels["le"])
            assert len({tuple(v) for v in layouts.values()}) <= 1, layouts


def _assert_monotonic(before, after):
    for key in before.monotonic_series():
        assert key in after.series, f"series {key[0]}{dict(key[1])} disappeared"
        assert after.series[key] >= before.series[key], (
            f"{key[0]}{dict(key[1])} went down: {before.series[key]} -> {after.series[key]}")


def test_metrics_token(make_twigate):
    token = "mt_" + os.urandom(12).hex()
    tg = make_twigate(overrides={"metrics.token": token})
    acct = tg.accounts["a"]
    for headers, auth in (({}, None), ({"Authorization": "Bearer wrong"}, None),
                          ({"Authorization": f"Bearer {token}x"}, None),
                          ({"Authorization": token}, None),
                          ({}, (acct.sid, acct.auth_token))):
        r = tg.http("GET", "/metrics", auth=auth, headers=headers)
        assert r.status_code == 401, (headers, auth, r.status_code)
        assert "twigate_" not in r.text
    _assert_shapes(_scrape(tg, token))


@pytest.mark.parametrize("length", [504, 505, 600, 4096])
def test_long_metrics_token_is_compared_in_full(make_twigate, length):
    """Issue 16 §2: a metrics.token past 504 characters was cut short at
    comparison (a fixed 512-byte buffer for "Bearer <token>"), so any header
    with the right first 504 characters was let in. Every character counts
    now, whatever the length; the scheme is case-insensitive."""
    token = ("t" + os.urandom(length).hex())[:length]
    tg = make_twigate(overrides={"metrics.token": token})
    last = "x" if token[-1] != "x" else "y"
    bads = [token[:-1], token[:-1] + last, token + "x"]
    if length > 504:
        bads.append(token[:504] + "z" * (length - 504))   # same length, differs past 504
    for bad in bads:
        r = tg.http("GET", "/metrics", auth=None, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, (len(bad), r.status_code)
    for scheme in ("Bearer", "bearer"):
        r = tg.http("GET", "/metrics", auth=None, headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, (scheme, r.status_code)


def test_metrics_without_token_are_open(make_twigate):
    tg = make_twigate()
    _assert_shapes(_scrape(tg))


def test_call_cache_metrics_move(make_twigate):
    """The call cache's counters (docs/architecture.md), through the strict
    parser: fetches of an ended call are hits from the second one on, and
    another account's fetch of it is a miss."""
    tg = make_twigate()
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
    tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    uri = lambda acct: f"{tg.account_uri(acct)}/Calls/{sid}.json"
    # Late writes to the row (recording events after the end) invalidate it;
    # wait until two fetches in a row are hits, so the deltas below are exact.
    def two_hits():
        m0 = _scrape(tg).value("twigate_call_cache_hits_total")
        for _ in range(2):
            assert tg.http("GET", uri("a")).status_code == 200
        return _scrape(tg).value("twigate_call_cache_hits_total") == m0 + 2
    wait_for(two_hits, 15, interval=0.2, message="fetches of an ended call never became hits")

    before = _scrape(tg)
    _assert_shapes(before)
    for name, kind in (("twigate_call_cache_hits_total", "counter"),
                       ("twigate_call_cache_misses_total", "counter"),
                       ("twigate_call_cache_entries", "gauge")):
        assert before.families[name]["type"] == kind, name
    assert before.value("twigate_call_cache_entries") >= 1
    for _ in range(3):
        assert tg.http("GET", uri("a")).status_code == 200
    assert tg.http("GET", uri("b"), account="b").status_code == 404
    after = _scrape(tg)
    _assert_monotonic(before, after)
    d = lambda name: after.value(name) - before.value(name)
    assert d("twigate_call_cache_hits_total") == 3
    assert d("twigate_call_cache_misses_total") == 1
    assert after.value("twigate_call_cache_entries") == before.value("twigate_call_cache_entries")


@sqlite_only("the checkpointer copies SQLite's write-ahead log into its file; "
             "PostgreSQL's server checkpoints its own WAL")
def test_checkpoints_follow_the_wal_volume(make_twigate):
    """The checkpointer runs once writers have added ~1,000 WAL pages, not
    only on its one-second timer (src/store/store.c: each pass then syncs a few MB,
    and the engine's appends do not stall behind a large sync). A burst of
    creates writes tens of pages per call: well past the step."""
    tg = make_twigate()
    before = _scrape(tg)
    assert before.families["twigate_sqlite_checkpoints_total"]["type"] == "counter"
    assert before.families["twigate_sqlite_wal_pages"]["type"] == "gauge"
    for _ in range(150):
        r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
        assert r.status_code == 201, r.text[:200]

    def by_volume():
        m = _scrape(tg)
        return m if m.value("twigate_sqlite_checkpoints_total", 0, trigger="volume") > \
            before.value("twigate_sqlite_checkpoints_total", 0, trigger="volume") else None
    after = wait_for(by_volume, 10, interval=0.2,
                     message="no checkpoint was started by the WAL's growth")
    _assert_shapes(after)
    _assert_monotonic(before, after)
    # The timer keeps running beside it, and the gauge reads the WAL's length.
    wait_for(lambda: _scrape(tg).value("twigate_sqlite_checkpoints_total", 0, trigger="timer")
             >= 1, 5, message="the one-second checkpoint timer never ran")
    # The counter moves when a pass starts, the gauge when it has finished
    # (src/store.c: the mark is stored after sqlite3_wal_checkpoint_v2), so a
    # scrape between the two - a slow sync on a loaded machine - still shows
    # the previous pass's length: wait for the volume pass to land.
    wait_for(lambda: _scrape(tg).value("twigate_sqlite_wal_pages") > 0, 10, interval=0.1,
             message="the WAL-length gauge never showed the volume pass")


def test_timer_lateness_histogram(make_twigate):
    """Each engine timer that fires (here a <Pause>) is observed in
    twigate_timer_lateness_seconds, due time to firing."""
    tg = make_twigate()
    c = tg.client("a")
    before = _scrape(tg)
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                          twiml='<Response><Pause length="1"/><Hangup/></Response>')
    tg.wait_for_status(c, call.sid, TERMINAL, timeout=15)
    after = _scrape(tg)
    _assert_shapes(after)
    fam = after.families["twigate_timer_lateness_seconds"]
    assert fam["type"] == "histogram", fam["type"]
    n = after.value("twigate_timer_lateness_seconds_count") - \
        before.value("twigate_timer_lateness_seconds_count", 0)
    late = after.value("twigate_timer_lateness_seconds_sum") - \
        before.value("twigate_timer_lateness_seconds_sum", 0)
    assert n >= 1, "the Pause's timer was not observed"
    # A lateness is what is left after the due time, not the Pause itself.
    assert 0 <= late < 0.5 * n, (late, n)
    _assert_monotonic(before, after)


def test_metrics_move_with_the_workload(make_twigate, receiver):
    token = "mt_" + os.urandom(12).hex()
    tg = make_twigate(overrides={"metrics.token": token})
    acct = tg.accounts["a"]
    c = tg.client("a")
    dead = f"http://127.0.0.1:{free_port()}/gone"
    receiver.set("/voice", SHORT_TWIML)
    receiver.set("/slowstatus", delay=0.6)

    before = _scrape(tg, token)
    _assert_shapes(before)
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        if name in before.families:
            assert before.families[name]["type"] == kind, (name, before.families[name]["type"])

    created = []
    # Callbacks held up by a slow receiver: the outbox has rows pending.
    slow = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                          status_callback=receiver.url("/slowstatus"),
                          status_callback_event=ALL_EVENTS)
    created.append(slow.sid)
    receiver.wait_for_requests("/slowstatus", 1, call_sid=slow.sid)
    mid = _scrape(tg, token)
    assert mid.value("twigate_outbox_pending") >= 1, "outbox_pending while deliveries wait"
    assert mid.value("twigate_outbox_oldest_seconds") > 0

    for _ in range(3):
        created.append(c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                                      status_callback=receiver.url("/status"),
                                      status_callback_event=ALL_EVENTS).sid)
    with_url = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"),
                              status_callback=receiver.url("/status"))
    created.append(with_url.sid)
    busy_dead = c.calls.create(to=fresh_number("0001"), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=dead)
    created.append(busy_dead.sid)
    live = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    created.append(live.sid)
    tg.wait_for_status(c, live.sid, "in-progress")
    assert _scrape(tg, token).value("twigate_live_calls") >= 1
    c.calls(live.sid).update(status="completed")

    # One 401, and one 429 from Kaphila: the dial waits and goes again
    # (issue 19), so the create is a 201 like the others.
    r = tg.http("GET", tg.account_uri("a") + "/Calls.json", auth=(acct.sid, "not-the-token"))
    assert r.status_code == 401
    tg.sim_fail(429, endpoint="/makecall")
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
    assert r.status_code == 201, r.text
    created.append(r.json()["sid"])

    for sid in created:
        tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    n_status = 4 * 4 + 1          # slow + 3 with every event, with_url's completed
    wait_for(lambda: len(receiver.requests("/status")) + len(receiver.requests("/slowstatus"))
             >= n_status, 15, message="status callbacks")
    n_created = len(created)
    answered = n_created - 1      # all but the busy one

    def settled():
        m = _scrape(tg, token)
        d = lambda name, **l: m.value(name, 0, **l) - before.value(name, 0, **l)
        checks = {
            "calls_create 201": (d("twigate_http_requests_total", route="calls_create",
                                   status="201"), n_created),
            "calls_create 429": (d("twigate_http_requests_total", route="calls_create",
                                   status="429"), 0),
            "calls_list 401": (d("twigate_http_requests_total", route="calls_list",
                                 status="401"), 1),
            "calls completed": (d("twigate_calls_total", status="completed"), answered),
            "calls busy": (d("twigate_calls_total", status="busy"), 1),
            "calls in-progress": (d("twigate_calls_total", status="in-progress"), answered),
            "live calls": (m.value("twigate_live_calls"), 0),
            "makecall ok": (d("twigate_kaphila_requests_total", endpoint="/makecall",
                              outcome="ok"), n_created),
            "makecall 429": (m.total("twigate_kaphila_429_total", endpoint="/makecall") -
                             before.total("twigate_kaphila_429_total", endpoint="/makecall"), 1),
            "status webhooks ok": (d("twigate_webhooks_total", kind="status", outcome="0"),
                                   n_status),
            "status webhooks 11205": (d("twigate_webhooks_total", kind="status",
                                        outcome="11205"), 1),
            "twiml fetch ok": (d("twigate_webhooks_total", kind="twiml", outcome="0"), 1),
            "twiml fetch timing": (d("twigate_twiml_fetch_seconds_count"), 1),
            "notification 11205": (d("twigate_notifications_total", code="11205"), 1),
            "events call.initiated": (d("twigate_kaphila_events_total",
                                        event="call.initiated"), n_created),
            "events call.answered": (d("twigate_kaphila_events_total",
                                       event="call.answered"), answered),
            "events call.ended": (d("twigate_kaphila_events_total", event="call.ended"),
                                  n_created),
            "outbox pending": (m.value("twigate_outbox_pending"), 0),
            "outbox oldest": (m.value("twigate_outbox_oldest_seconds"), 0),
            "dropped series": (m.value("twigate_metrics_dropped_total"), 0),
        }
        bad = {k: v for k, v in checks.items() if v[0] != v[1]}
        settled.last = (m, bad)
        return m if not bad else None

    try:
        after = wait_for(settled, 15)
    except AssertionError:
        m, bad = settled.last
        raise AssertionError("metrics did not reach the expected values "
                             "(name: (got, expected)): " + repr(bad))
    _assert_shapes(after)
    _assert_monotonic(before, after)
    _assert_monotonic(mid, after)

    missing = [n for n in REQUIRED_FAMILIES if n not in after.families]
    assert not missing, f"metric families issue 7 asks for are missing: {missing}"
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        fam = after.families[name]
        assert fam["type"] == kind, (name, fam["type"], kind)
        for sample, got, _ in fam["samples"]:
            assert set(got) - {"le"} == labels, (sample, got, labels)

    # Latency histograms count exactly what the counters count.
    for route in ("calls_create", "calls_list", "call_fetch", "call_update"):
        assert after.value("twigate_http_request_seconds_count", route=route) == \
            after.total("twigate_http_requests_total", route=route), route
    for labels, _ in after.samples("twigate_kaphila_request_seconds_count"):
        ep = labels["endpoint"]
        assert after.value("twigate_kaphila_request_seconds_count", endpoint=ep) == \
            after.total("twigate_kaphila_requests_total", endpoint=ep), ep
    assert after.value("twigate_webhook_seconds_count", kind="status") == \
        after.total("twigate_webhooks_total", kind="status")
    assert after.value("twigate_http_request_seconds_sum", route="calls_create") > 0
    assert after.value("twigate_sqlite_busy_total") >= 0
    # Hang-ups (the REST one and the end-of-TwiML ones) are counted too.
    assert after.total("twigate_kaphila_requests_total", endpoint="/hangup") >= 1
