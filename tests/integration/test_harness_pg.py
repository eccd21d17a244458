"""Self-tests of the scale-out harness (issue 21): the real PostgreSQL 15 and
HAProxy from Debian that the PostgreSQL backend's tests will stand on.

They also show, on the real server, the two primitives docs/scale-out.md
builds on: ``FOR UPDATE SKIP LOCKED`` (N instances claim disjoint jobs, and
a claimer that dies gives its rows back) and ``LISTEN/NOTIFY`` (a wake-up
that is only a hint: a session not listening when it was sent never sees
it).  Skipped, with the reason, where PostgreSQL or HAProxy is missing."""

import select
import socket

import pytest
import requests

from harness import pg, wait_for


def _session():
    s = requests.Session()
    s.trust_env = False
    return s


# ------------------------------------------------------------- PostgreSQL

def test_postgres_accepts_twigates_url_and_only_with_its_password(postgres):
    out = postgres.psql("SELECT current_user, current_database(), "
                        "current_setting('server_version_num')::int >= 150000, "
                        "current_setting('fsync')")
    assert out.strip() == "twigate|twigate|t|off"
    conn = postgres.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT inet_server_addr()::text, inet_server_port()")
        assert cur.fetchone() == ("127.0.0.1/32", postgres.port)
    conn.close()
    bad = postgres.url.replace(postgres.password, "wrong")
    with pytest.raises(AssertionError, match="password authentication failed"):
        postgres.psql("SELECT 1", url=bad)


def test_fresh_databases_are_empty_and_isolated(postgres):
    a, b = postgres.fresh_database(), postgres.fresh_database()
    assert a != b
    postgres.psql("CREATE TABLE calls (sid text PRIMARY KEY); "
                  "INSERT INTO calls VALUES ('CA1')", url=a)
    assert postgres.psql("SELECT count(*) FROM calls", url=a).strip() == "1"
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert postgres.psql(tables, url=b).strip() == "0"
    assert postgres.psql(tables, url=postgres.url_for(pg.TEMPLATE_DB)).strip() == "0"


CLAIM = ("SELECT id FROM jobs WHERE due_ms <= 1000 ORDER BY due_ms, id "
         "LIMIT %s FOR UPDATE SKIP LOCKED")


def test_skip_locked_claims_are_disjoint_and_a_dead_claimers_rows_return(postgres, pg_url):
    setup = postgres.connect(pg_url)
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE jobs (id int PRIMARY KEY, due_ms bigint NOT NULL)")
        cur.execute("INSERT INTO jobs SELECT i, i * 10 FROM generate_series(1, 6) i")
    a, b, c = (postgres.connect(pg_url, autocommit=False) for _ in range(3))
    for conn in (a, b, c):
        with conn.cursor() as cur:
            # Any wait on a lock fails the test instead of hanging it.
            cur.execute("SET lock_timeout = '2s'")
    claimed = {}
    for name, conn in (("a", a), ("b", b)):
        with conn.cursor() as cur:
            cur.execute(CLAIM, (3,))
            claimed[name] = {r[0] for r in cur.fetchall()}
    assert claimed["a"] == {1, 2, 3}             # oldest first
    assert claimed["b"] == {4, 5, 6}             # skipped a's rows, did not wait
    with c.cursor() as cur:
        cur.execute(CLAIM, (3,))
        assert cur.fetchall() == []              # nothing left, and no wait
        # Without SKIP LOCKED the third claimer would queue behind a:
        import psycopg2.errors
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            cur.execute("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
    c.rollback()
    # b finishes its jobs; a "dies" (its transaction ends without a commit).
    with b.cursor() as cur:
        cur.execute("DELETE FROM jobs WHERE id = ANY(%s)", (list(claimed["b"]),))
    b.commit()
    a.close()

    def reclaimed():
        # The server drops a's locks when it sees the disconnect, a moment
        # after close() returns: claim again until it has.
        with c.cursor() as cur:
            cur.execute(CLAIM, (10,))
            rows = {r[0] for r in cur.fetchall()}
        c.rollback()
        return rows == {1, 2, 3}
    wait_for(reclaimed, timeout=5, message="a's jobs claimable after its session ended")
    for conn in (b, c, setup):
        conn.close()


def _notifies(conn, want, timeout=5.0):
    """Waits (on the socket, bounded) until conn has received `want`
    notifications; returns their (channel, payload) in order."""
    got = []

    def poll():
        select.select([conn], [], [], 0.1)
        conn.poll()
        while conn.notifies:
            n = conn.notifies.pop(0)
            got.append((n.channel, n.payload))
        return len(got) >= want
    wait_for(poll, timeout, interval=0, message=f"{want} notifications (got {got})")
    return got


def test_listen_notify_delivers_on_commit_and_only_to_those_listening(postgres, pg_url):
    early, sender = postgres.connect(pg_url), postgres.connect(pg_url, autocommit=False)
    with early.cursor() as cur:
        cur.execute("LISTEN call_events")
    with sender.cursor() as cur:
        cur.execute("SELECT pg_notify('call_events', 'CA1')")
    sender.commit()
    assert _notifies(early, 1) == [("call_events", "CA1")]
    # A session that starts listening afterwards never sees CA1 - the reason
    # the design polls the stored rows and treats NOTIFY as a hint.  CA2 is
    # the barrier: notifications arrive in commit order, so once CA2 is here
    # CA1 would have been too.
    late = postgres.connect(pg_url)
    with late.cursor() as cur:
        cur.execute("LISTEN call_events")
    with sender.cursor() as cur:
        cur.execute("SELECT pg_notify('call_events', 'CA2')")
    sender.commit()
    assert _notifies(late, 1) == [("call_events", "CA2")]
    assert _notifies(early, 1) == [("call_events", "CA2")]
    for conn in (early, sender, late):
        conn.close()


def test_a_second_server_starts_and_stops_cleanly(tmp_path):
    reason = pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = pg.PostgresServer(tmp_path).start()
    port, root = server.port, server.root
    assert server.psql("SELECT 42").strip() == "42"
    server.stop()                                 # asserts exit 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    import os
    assert not os.path.exists(root)
    assert "database system is shut down" in server.log_text()


# ---------------------------------------------------------------- HAProxy

def test_haproxy_balances_two_twigates_and_drops_a_killed_one(make_twigate, make_haproxy,
                                                              accounts):
    tg1, tg2 = make_twigate(), make_twigate()
    lb = make_haproxy([tg1, tg2], check_ms=100)
    assert lb.server_states() == {"s1": "UP", "s2": "UP"}
    acct = accounts["a"]
    http = _session()

    def fetch_account():
        r = http.get(f"{lb.url}/2010-04-01/Accounts/{acct.sid}.json",
                     auth=(acct.sid, acct.auth_token), timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()["sid"] == acct.sid
        return r.headers["X-Twigate-Backend"]

    served = [fetch_account() for _ in range(10)]
    assert sorted(served) == ["s1"] * 5 + ["s2"] * 5, served   # round robin
    tg2.kill9()
    wait_for(lambda: lb.server_states()["s2"] == "DOWN", timeout=5,
             message=f"haproxy marks the killed twigate DOWN ({lb.server_states()})")
    assert lb.server_states()["s1"] == "UP"
    assert [fetch_account() for _ in range(10)] == ["s1"] * 10
