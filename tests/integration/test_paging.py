"""List Calls (contract §5): the envelope, paging links the SDKs follow, the
filters, newest-first order, and the SDKs' own paging (list/stream/page)."""

import sqlite3
import urllib.parse
from datetime import datetime, timedelta, timezone

import pytest

from harness import (LIVE_TWIML, SHORT_TWIML, assert_list_envelope,
                     assert_matches_schema, assert_twilio_error, fresh_number,
                     parse_rfc2822)
from harness.db import sqlite_only

CALLS = "/2010-04-01/Accounts/{AccountSid}/Calls.json"
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}


@pytest.fixture(scope="module")
def data(twigate):
    """To=T: 7 completed calls From=F (created in this order), 2 completed
    calls From=F2, and 1 live (in-progress) call From=F."""
    c = twigate.client()
    to, frm, frm2 = fresh_number(), fresh_number(), fresh_number()
    group = []
    for _ in range(7):
        group.append(c.calls.create(to=to, from_=frm, twiml=SHORT_TWIML).sid)
    others = [c.calls.create(to=to, from_=frm2, twiml=SHORT_TWIML).sid for _ in range(2)]
    for sid in group + others:
        twigate.wait_for_status(c, sid, TERMINAL)
    live = c.calls.create(to=to, from_=frm, twiml=LIVE_TWIML).sid
    twigate.wait_for_status(c, live, "in-progress")
    first = c.calls(group[0]).fetch()
    day = first.start_time.date()
    yield {"to": to, "from": frm, "from2": frm2, "group": group, "others": others,
           "live": live, "day": day}
    c.calls(live).update(status="completed")


def get_list(tg, params=None, uri=None):
    if uri is not None:
        r = tg.http("GET", uri)
    else:
        r = tg.http("GET", tg.account_uri() + "/Calls.json", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_list_envelope(body, "calls")
    assert_matches_schema(CALLS, "get", 200, body)
    return body


def query_of(uri):
    split = urllib.parse.urlsplit(uri)
    return split.path, dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))


def sids(body):
    return [c["sid"] for c in body["calls"]]


def test_three_pages_with_filters(twigate, data):
    filters = {"To": data["to"], "From": data["from"], "Status": "completed"}
    calls_path = twigate.account_uri() + "/Calls.json"

    p0 = get_list(twigate, dict(filters, PageSize=3))
    assert (p0["page"], p0["page_size"], p0["start"], p0["end"]) == (0, 3, 0, 2)
    assert len(p0["calls"]) == 3
    assert p0["previous_page_uri"] is None
    for key in ("uri", "first_page_uri"):
        path, q = query_of(p0[key])
        assert path == calls_path, p0[key]
        assert {k: q.get(k) for k in filters} == filters, p0[key]
        assert q.get("PageSize") == "3", p0[key]
    assert query_of(p0["first_page_uri"])[1].get("Page", "0") == "0"

    path, q = query_of(p0["next_page_uri"])
    assert path == calls_path
    assert {k: q.get(k) for k in filters} == filters, p0["next_page_uri"]
    assert q.get("PageSize") == "3" and q.get("Page") == "1", p0["next_page_uri"]
    assert q.get("PageToken"), p0["next_page_uri"]

    p1 = get_list(twigate, uri=p0["next_page_uri"])
    assert (p1["page"], p1["page_size"], p1["start"], p1["end"]) == (1, 3, 3, 5)
    assert len(p1["calls"]) == 3
    assert p1["previous_page_uri"] is not None
    path, q = query_of(p1["next_page_uri"])
    assert {k: q.get(k) for k in filters} == filters
    assert q.get("Page") == "2" and q.get("PageSize") == "3" and q.get("PageToken")

    p2 = get_list(twigate, uri=p1["next_page_uri"])
    assert (p2["page"], p2["start"], p2["end"]) == (2, 6, 6)
    assert len(p2["calls"]) == 1
    assert p2["next_page_uri"] is None
    assert p2["previous_page_uri"] is not None

    walked = sids(p0) + sids(p1) + sids(p2)
    assert walked == list(reversed(data["group"])), "not newest first / pages overlap"

    # previous_page_uri of page 1 leads back to page 0
    back = get_list(twigate, uri=p1["previous_page_uri"])
    assert sids(back) == sids(p0)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_bare_page_number_matches_the_token_walk(twigate, data, size):
    """Page=N without a PageToken (a hand-written URI) lands on the same
    records as following next_page_uri N times, with filters; a page past the
    end is empty with no next page."""
    filters = {"To": data["to"], "From": data["from"], "Status": "completed"}
    walked, page, body = [], 0, get_list(twigate, dict(filters, PageSize=size))
    while True:
        bare = get_list(twigate, dict(filters, PageSize=size, Page=page))
        assert sids(bare) == sids(body), f"Page={page} PageSize={size}"
        assert (bare["page"], bare["start"]) == (page, page * size)
        walked += sids(body)
        if not body["next_page_uri"]:
            break
        body, page = get_list(twigate, uri=body["next_page_uri"]), page + 1
    assert walked == list(reversed(data["group"]))
    past = get_list(twigate, dict(filters, PageSize=size, Page=page + 1))
    assert past["calls"] == [] and past["next_page_uri"] is None


def test_newest_first_by_date(twigate, data):
    body = get_list(twigate, {"To": data["to"], "PageSize": 50})
    created = [parse_rfc2822(c["date_created"]) for c in body["calls"]]
    assert created == sorted(created, reverse=True)
    assert sids(body)[0] == data["live"]


def test_empty_list(twigate):
    body = get_list(twigate, {"To": fresh_number(), "PageSize": 5})
    assert body["calls"] == []
    assert (body["page"], body["start"], body["end"]) == (0, 0, 0)
    assert body["next_page_uri"] is None and body["previous_page_uri"] is None
    assert body["page_size"] == 5


def test_default_page_size_is_50(twigate, data):
    body = get_list(twigate, {"To": data["to"]})
    assert body["page_size"] == 50 and len(body["calls"]) == 10
    assert body["next_page_uri"] is None


@pytest.mark.parametrize("size", ["1001", "0", "-1", "abc"])
def test_bad_page_size_is_400(twigate, size):
    r = twigate.http("GET", twigate.account_uri() + "/Calls.json", params={"PageSize": size})
    assert_twilio_error(r, 400)


def test_filters(twigate, data):
    to, frm = data["to"], data["from"]
    day = data["day"]
    d, d_next = day.isoformat(), (day + timedelta(days=1)).isoformat()
    everything = set(data["group"] + data["others"] + [data["live"]])
    ended = set(data["group"] + data["others"])

    def q(**params):
        return set(sids(get_list(twigate, dict(params, To=to, PageSize=100))))

    assert q() == everything
    assert q(From=frm) == set(data["group"] + [data["live"]])
    assert q(From=data["from2"]) == set(data["others"])
    assert q(Status="completed") == ended
    assert q(Status="in-progress") == {data["live"]}
    assert q(Status="busy") == set()
    assert q(StartTime=d) == everything
    assert q(**{"StartTime>": d}) == everything
    assert q(**{"StartTime<": d}) == set()
    assert q(**{"StartTime<": d_next}) == everything
    assert q(**{"StartTime>": d_next}) == set()
    assert q(EndTime=d) == ended
    assert q(**{"EndTime>": d}) == ended
    assert q(**{"EndTime<": d}) == set()
    assert q(ParentCallSid="CA" + "ab" * 16) == set()


def test_sdk_paging(twigate, data):
    c = twigate.client()
    to, frm = data["to"], data["from"]
    listed = c.calls.list(to=to, from_=frm, status="completed", page_size=3)
    assert [x.sid for x in listed] == list(reversed(data["group"]))
    assert len(c.calls.list(to=to, limit=5)) == 5
    streamed = [x.sid for x in c.calls.stream(to=to, page_size=3)]
    assert len(streamed) == 10 and set(streamed) == set(
        data["group"] + data["others"] + [data["live"]])
    page = c.calls.page(to=to, from_=frm, status="completed", page_size=3)
    first = [x.sid for x in page]
    second = [x.sid for x in page.next_page()]
    assert first == list(reversed(data["group"]))[:3]
    assert second == list(reversed(data["group"]))[3:6]


def test_sdk_date_filters(twigate, data):
    c = twigate.client()
    midnight = datetime(data["day"].year, data["day"].month, data["day"].day,
                        tzinfo=timezone.utc)
    got = {x.sid for x in c.calls.list(to=data["to"], start_time_after=midnight)}
    assert got == set(data["group"] + data["others"] + [data["live"]])
    assert c.calls.list(to=data["to"], start_time_before=midnight) == []
    got = {x.sid for x in c.calls.list(to=data["to"], end_time=data["day"].isoformat())}
    assert got == set(data["group"] + data["others"])


# ---------------------------------------------------------------- status index
# Schema 3 (src/store/store.c): ended calls are listed by status through
# calls_acct_ended, live ones through calls_live (account_sid, status); a
# call moves from one to the other when it ends.

def _status_list(tg, account, status, page_size=50):
    """Every SID of the account's list for Status=status, following
    next_page_uri page by page."""
    got, uri = [], None
    body = get_list_as(tg, account, {"Status": status, "PageSize": page_size})
    while True:
        got += sids(body)
        uri = body.get("next_page_uri")
        if not uri:
            return got
        body = get_list_as(tg, account, uri=uri)


def get_list_as(tg, account, params=None, uri=None):
    if uri is None:
        r = tg.http("GET", tg.account_uri(account) + "/Calls.json", account=account,
                    params=params)
    else:
        r = tg.http("GET", uri, account=account)
    assert r.status_code == 200, r.text
    assert_list_envelope(r.json(), "calls")
    return r.json()


def test_status_lists_follow_the_call_and_stay_in_the_account(make_twigate):
    tg = make_twigate()
    ca, cb = tg.client("a"), tg.client("b")
    live_a = [ca.calls.create(to=fresh_number(), from_=fresh_number(), twiml=LIVE_TWIML).sid
              for _ in range(3)]
    live_b = cb.calls.create(to=fresh_number(), from_=fresh_number(), twiml=LIVE_TWIML).sid
    for sid in live_a:
        tg.wait_for_status(ca, sid, "in-progress")
    tg.wait_for_status(cb, live_b, "in-progress")

    # Newest first, one per page through the token: the live index's walk.
    assert _status_list(tg, "a", "in-progress", page_size=1) == live_a[::-1]
    assert _status_list(tg, "b", "in-progress") == [live_b]
    assert _status_list(tg, "a", "completed") == []

    ca.calls(live_a[1]).update(status="completed")
    tg.wait_for_status(ca, live_a[1], "completed")
    assert _status_list(tg, "a", "in-progress") == [live_a[2], live_a[0]]
    assert _status_list(tg, "a", "completed") == [live_a[1]]
    assert _status_list(tg, "b", "completed") == []
    for sid in (live_a[0], live_a[2]):
        ca.calls(sid).update(status="completed")
    cb.calls(live_b).update(status="completed")
    for sid in (live_a[0], live_a[2]):
        tg.wait_for_status(ca, sid, "completed")
    assert _status_list(tg, "a", "in-progress") == []
    assert _status_list(tg, "a", "completed", page_size=2) == live_a[::-1]


@sqlite_only("it migrates a version-2 SQLite file (PRAGMA user_version, schema 2's "
             "indexes); no PostgreSQL database ever had schema 2's indexes (its first "
             "step creates schema 5 whole; test_store_pg.py compares the two)")
def test_a_schema_2_database_is_migrated(make_twigate):
    """A database written before schema 3 (calls_acct_status over every
    call, calls_live on status alone) gets the new indexes at the next start
    and lists the same calls."""
    tg = make_twigate()
    c = tg.client("a")
    ended = [c.calls.create(to=fresh_number(), from_=fresh_number(), twiml=SHORT_TWIML).sid
             for _ in range(3)]
    for sid in ended:
        tg.wait_for_status(c, sid, "completed")
    tg.stop()
    con = sqlite3.connect(tg.db_path)
    con.executescript(
        "DROP INDEX calls_acct_ended; DROP INDEX calls_live;"
        "CREATE INDEX calls_acct_status ON calls(account_sid, status, id);"
        "CREATE INDEX calls_live ON calls(status)"
        "  WHERE status = 'queued' OR status = 'ringing' OR status = 'in-progress';"
        "PRAGMA user_version = 2;")
    con.close()

    tg.start()
    con = sqlite3.connect(f"file:{tg.db_path}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 3
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "calls_acct_status" not in names and "calls_acct_ended" in names, names
        cols = [r[2] for r in con.execute("PRAGMA index_info(calls_live)")]
        assert cols == ["account_sid", "status"], cols
    finally:
        con.close()
    assert _status_list(tg, "a", "completed") == ended[::-1]
    live = c.calls.create(to=fresh_number(), from_=fresh_number(), twiml=LIVE_TWIML).sid
    tg.wait_for_status(c, live, "in-progress")
    assert _status_list(tg, "a", "in-progress") == [live]
    c.calls(live).update(status="completed")
