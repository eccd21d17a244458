"""twigate on the PostgreSQL backend (issue 21 step 2; docs/scale-out.md §1,
§2), with a real PostgreSQL 15, the built-in simulator and the SDK: one
instance with db.url set runs a call with its status callbacks, lists and
filters it, keeps a recording, and finds all of it again after a restart;
a <Gather> IVR survives kill -9 of twigate from its checkpoint in PostgreSQL
(test_resume.py's scenario, reading the checkpoint from the server);
`twigate --migrate` brings an empty database to the schema's version and
exits, on both backends, and never prints the password. The whole suites
run on PostgreSQL too with TWIGATE_TEST_DB=postgresql (conftest.py), as
make check's third pass does. Skipped, with the reason, where PostgreSQL is
missing."""

import subprocess

import test_resume as resume
from harness import DEFAULT_FROM, SHORT_TWIML, fresh_number, outbox_drained, wait_for
from harness.daemon import binary
from test_resume import slow_sim  # noqa: F401  (the fixture, shared)

TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]


def test_a_call_with_callbacks_lists_and_recordings_on_postgresql(make_twigate, receiver,
                                                                   postgres, pg_url):
    tg = make_twigate(overrides={"db.url": pg_url})
    client = tg.client()
    receiver.set("/voice", SHORT_TWIML)
    to = fresh_number()
    call = client.calls.create(to=to, from_=DEFAULT_FROM, url=receiver.url("/voice"),
                               status_callback=receiver.url("/status"),
                               status_callback_event=ALL_EVENTS, record=True)
    done = tg.wait_for_status(client, call.sid, TERMINAL)
    assert done.status == "completed"
    got = receiver.wait_for_requests("/status", 4, call_sid=call.sid)
    outbox_drained(tg)
    assert sorted(int(r.params["SequenceNumber"]) for r in got) == [0, 1, 2, 3]

    # The rows are PostgreSQL's, not a file's.
    assert postgres.psql(f"SELECT status FROM calls WHERE sid = '{call.sid}'",
                         url=pg_url).strip() == "completed"
    assert postgres.psql(f"SELECT count(*) FROM outbox WHERE call_sid = '{call.sid}'"
                         f" AND state = 'done'", url=pg_url).strip() == "4"

    # List with filters: by To and by status, and one that matches nothing.
    assert [c.sid for c in client.calls.list(to=to)] == [call.sid]
    assert call.sid in [c.sid for c in client.calls.list(status="completed", limit=50)]
    assert client.calls.list(to=to, status="busy") == []
    # Record=true: the call's recording, listed under the call and the account.
    recs = wait_for(lambda: client.calls(call.sid).recordings.list() or None, 15,
                    message="no recording listed")
    assert recs[0].call_sid == call.sid
    assert recs[0].sid in [r.sid for r in client.recordings.list(call_sid=call.sid)]

    # A restart on the same database finds everything again.
    tg.restart()
    client = tg.client()
    again = client.calls(call.sid).fetch()
    assert (again.status, again.to) == ("completed", to)
    assert [r.sid for r in client.calls(call.sid).recordings.list()] == [recs[0].sid]
    assert len(client.calls(call.sid).events.list()) > 0


def _migrate(*sets):
    argv = [binary("twigate"), "--migrate"]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_migrate_brings_an_empty_database_up_and_exits(postgres, pg_url, tmp_path):
    assert postgres.psql("SELECT to_regclass('schema_version') IS NULL", url=pg_url).strip() == "t"
    out = _migrate(f"db.url={pg_url}")
    assert out.returncode == 0, out.stderr
    assert "postgresql database schema is current" in out.stdout
    assert postgres.psql("SELECT version FROM schema_version", url=pg_url).strip() == "8"
    # Again: nothing to do, same answer.
    assert _migrate(f"db.url={pg_url}").returncode == 0

    db = tmp_path / "m.db"
    out = _migrate(f"db.path={db}")
    assert out.returncode == 0, out.stderr
    assert "sqlite database schema is current" in out.stdout
    assert db.exists()


def test_migrate_refuses_a_bad_url_without_printing_the_password(postgres, pg_url):
    secret = pg_url.split(":")[2].split("@")[0]
    bad = pg_url.replace(f":{secret}@", ":wrong-password-123@")
    out = _migrate(f"db.url={bad}")
    assert out.returncode == 1
    assert "db.url" in out.stderr and "***" in out.stderr
    assert "wrong-password-123" not in out.stderr + out.stdout
    out = _migrate("db.url=mysql://u:p@h/d")
    assert out.returncode == 1 and "postgresql://" in out.stderr


def test_connections_lost_to_the_server_are_reopened(make_twigate, postgres, pg_url):
    """Every session of twigate is cut by the server (pg_terminate_backend, as
    a server restart or a network cut would): libpq notices only at the next
    use, and what meets the dead session then — the engine's BEGIN, a read —
    changed nothing and is run again on a fresh one, so no client sees the cut:
    the next create and fetches answer at once, and /readyz stays 200."""
    tg = make_twigate(overrides={"db.url": pg_url})
    client = tg.client()
    first = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                twiml="<Response><Hangup/></Response>")
    tg.wait_for_status(client, first.sid, TERMINAL)
    pids = postgres.psql("SELECT string_agg(pid::text, ',') FROM pg_stat_activity"
                         " WHERE datname = current_database() AND pid <> pg_backend_pid()",
                         url=pg_url).strip()
    assert pids, "twigate has no session to cut"
    killed = postgres.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                           f" WHERE pid IN ({pids})", url=pg_url)
    assert int(killed) >= 1
    # Those sessions gone (not "no session at all": the inbox's listener and
    # the lease renewal open new ones within milliseconds, so a count of 0
    # may never be seen under load).
    wait_for(lambda: postgres.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid IN ({pids})",
                                   url=pg_url).strip() == "0", 10,
             message="the server did not end twigate's sessions")

    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                               twiml="<Response><Hangup/></Response>")
    assert tg.wait_for_status(client, call.sid, TERMINAL).status == "completed"
    assert client.calls(first.sid).fetch().status == "completed"
    assert tg._http.get(tg.base_url + "/readyz", timeout=5).status_code == 200
    assert "reconnecting" in tg.log_text()


def test_a_gather_ivr_survives_kill9_on_postgresql(make_twigate, slow_sim, receiver, pg_url):
    # resume.checkpoint reads the row through harness/db.py: from the server.
    tg = make_twigate(external_sim=slow_sim, overrides={"db.url": pg_url})
    resume._gather_ivr_survives(tg, receiver, tg.kill9)
