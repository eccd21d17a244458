"""Two twigates on one PostgreSQL behind HAProxy (issue 21, step 4;
docs/scale-out.md §4, §5): live calls owned by one instance, leases,
adoption from checkpoints, and the inbox that carries what one instance
received for the other's call.

Real parts only: PostgreSQL 15 and HAProxy from Debian (started by the
harness, skipped with the reason where missing), the standalone simulator
in its slow mode, shared by both twigates and outliving either, the SDK
through the load balancer, and the webhook receiver that checks every
signature.  Kaphila posts each event to the balancer, so events land on
either instance.  Every wait is on an event: the owner column, the
simulator's transcript, the receiver's requests; never a fixed time.

  * a <Gather> IVR: the instance that owns the call is killed (SIGKILL)
    while the prompt plays; within 5 s the other owns it, says the prompt
    again, a key then reaches the action URL, and the call ends `completed`
    with each status callback delivered once;
  * calls whose events are split between the instances by the balancer:
    each status is applied once (one callback per status, one token each);
  * a REST update sent to the instance that does not own the call reaches
    its owner, which ends the call."""

import json

import pytest

from harness import DEFAULT_FROM, fresh_number, wait_for
from harness.daemon import render_config
from harness.ivr import create, kaphila_requests, wait_kaphila
from test_resume import ALL_EVENTS, DONE, IVR, PROMPT, assert_callbacks_once
from test_resume import slow_sim  # noqa: F401  (the fixture, shared)

pytestmark = pytest.mark.usefixtures("postgres")


def _sql(pg_url, query, args=()):
    import psycopg2
    con = psycopg2.connect(pg_url)
    try:
        with con.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    finally:
        con.close()


def _sql_do(pg_url, statements, args=()):
    """Runs statements (DDL) committed, no rows wanted."""
    import psycopg2
    con = psycopg2.connect(pg_url)
    con.autocommit = True
    try:
        with con.cursor() as cur:
            cur.execute(statements, args)
    finally:
        con.close()


def owner(pg_url, sid):
    rows = _sql(pg_url, "SELECT owner FROM calls WHERE sid = %s", (sid,))
    return rows[0][0] if rows else None


def checkpoint(pg_url, sid):
    rows = _sql(pg_url, "SELECT state FROM call_checkpoints WHERE call_sid = %s", (sid,))
    return json.loads(rows[0][0]) if rows else None


def start_cluster(make_twigate, make_haproxy, sim, pg_url, **settings):
    """Two twigates on pg_url behind one HAProxy, their public_url the
    balancer's (so Kaphila's events go through it). Returns (lb, [tg1, tg2])."""
    tgs = [make_twigate(external_sim=sim, start=False,
                        overrides={"db.url": pg_url, "cluster.instance_id": f"tg{i}",
                                   **settings})
           for i in (1, 2)]
    lb = make_haproxy(tgs, start=False)
    for tg in tgs:
        tg.settings["public_url"] = lb.url
        with open(tg.config_path, "w", encoding="utf-8") as f:
            f.write(render_config(tg.settings))
        tg.start()
    lb.start()
    return lb, tgs


@pytest.fixture
def cluster(make_twigate, make_haproxy, slow_sim, pg_url):
    return start_cluster(make_twigate, make_haproxy, slow_sim, pg_url)


def lb_client(lb, tg):
    c = tg.client()
    c.api.base_url = lb.url
    return c


def metric(tg, series):
    body = tg.http("GET", "/metrics", auth=None).text
    total = 0.0
    for line in body.splitlines():
        if line.startswith(series + " "):
            total += float(line.split()[-1])
    return total


def inbox_forwarded(tg):
    return metric(tg, 'twigate_cluster_inbox_total{dir="forwarded"}')


def goes_on_at(tg, client, receiver, sid, digit):
    """After a hand-over to tg: the prompt is said again (at least once), a
    key pressed then reaches the IVR's action URL, the call completes."""
    wait_kaphila(tg, sid, lambda reqs: reqs.count(("/voice", {"text": PROMPT})) == 2,
                 timeout=20, what="the new owner did not say the prompt again")
    tg.sim_digits(sid, digit)
    done = receiver.wait_for_requests("/resume/done", 1, call_sid=sid, timeout=20)
    assert done[0].params["Digits"] == digit, done[0].params
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"


def instance_name(tg):
    """The instance name a twigate of start_cluster runs under."""
    return tg.settings["cluster.instance_id"]


def ivr_in_gather(cluster, receiver, pg_url, path, status_path):
    """A <Gather> IVR created through the balancer and waiting for a key
    (its checkpoint in mode 1; its action, /resume/done, is relative to
    path). Returns (client, sid, its owner, the other)."""
    lb, tgs = cluster
    by_id = {"tg1": tgs[0], "tg2": tgs[1]}
    client = lb_client(lb, tgs[0])
    receiver.set(path, twiml=IVR)
    receiver.set("/resume/done", twiml=DONE)
    sid = create(client, receiver, path, status_callback=receiver.url(status_path),
                 status_callback_event=ALL_EVENTS).sid
    first = owner(pg_url, sid)
    assert first in by_id, first
    wait_for(lambda: (checkpoint(pg_url, sid) or {}).get("mode") == 1, timeout=20,
             message="no <Gather> checkpoint")
    return client, sid, by_id[first], by_id["tg2" if first == "tg1" else "tg1"]


def test_gather_ivr_survives_kill9_of_its_owner_behind_the_balancer(cluster, receiver,
                                                                   slow_sim, pg_url):
    client, sid, dead, survivor = ivr_in_gather(cluster, receiver, pg_url, "/cl/ivr", "/cl/st")
    wait_kaphila(dead, sid, lambda reqs: ("/voice", {"text": PROMPT}) in reqs, timeout=20,
                 what="the prompt was never sent")

    dead.kill9()
    # Lease (3 s) + one adoption pass (0.5 s): within the 5 s.
    wait_for(lambda: owner(pg_url, sid) == instance_name(survivor), timeout=5,
             message="the call was not adopted within 5 s")
    goes_on_at(survivor, client, receiver, sid, "7")
    assert_callbacks_once(receiver, "/cl/st", sid)
    statuses = {r.params["CallStatus"] for r in receiver.requests("/cl/st", call_sid=sid)}
    assert statuses == {"initiated", "ringing", "in-progress", "completed"}, statuses
    assert checkpoint(pg_url, sid) is None
    assert "call adopted from an instance that is no longer up" in survivor.log_text()


def test_events_split_between_instances_apply_each_status_once(cluster, receiver, pg_url):
    lb, tgs = cluster
    client = lb_client(lb, tgs[0])
    receiver.set("/cl/short", twiml="<Response><Say>Hello there.</Say><Hangup/></Response>")
    sids = [create(client, receiver, "/cl/short", status_callback=receiver.url("/cl/st2"),
                   status_callback_event=ALL_EVENTS).sid for _ in range(12)]
    owners = {owner(pg_url, s) for s in sids}
    assert owners == {"tg1", "tg2"}, f"the balancer gave every create to one instance: {owners}"
    for sid in sids:
        assert tgs[0].wait_for_status(client, sid, {"completed", "failed"}, timeout=30).status \
            == "completed"
        receiver.wait_for_requests("/cl/st2", 4, call_sid=sid, timeout=20)
    for sid in sids:
        reqs = receiver.requests("/cl/st2", call_sid=sid)
        got = sorted(r.params["CallStatus"] for r in reqs)
        assert got == sorted(["initiated", "ringing", "in-progress", "completed"]), (sid, got)
        assert len({r.header("I-Twilio-Idempotency-Token") for r in reqs}) == 4, sid
    # Round robin sent some of each call's events to the instance that does
    # not own it: they went through the inbox.
    assert sum(inbox_forwarded(tg) for tg in tgs) > 0


def test_an_update_sent_to_the_other_instance_reaches_the_owner(cluster, receiver, pg_url):
    lb, tgs = cluster
    client = lb_client(lb, tgs[0])
    sid = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                              twiml='<Response><Pause length="60"/></Response>').sid
    wait_for(lambda: (checkpoint(pg_url, sid) or {}).get("wait") is not None, timeout=20,
             message="the call never reached its <Pause>")
    other = tgs[1] if owner(pg_url, sid) == "tg1" else tgs[0]
    direct = other.client()             # not through the balancer: the non-owner itself
    call = direct.calls(sid).update(status="completed")
    assert call.sid == sid
    assert other.wait_for_status(direct, sid, {"completed", "failed"}, timeout=10).status == \
        "completed"
    assert inbox_forwarded(other) >= 1


SAY_HANGUP = "<Response><Say>hi</Say><Hangup/></Response>"
B_LIMIT, B_WINDOW_MS = 12, 4000


@pytest.fixture
def strict_sim(tmp_path, accounts):
    """The standalone simulator as strict as Kaphila: B_LIMIT counted
    requests per key in any B_WINDOW_MS, 429 beyond."""
    from harness import KaphilaSim
    sim = KaphilaSim(tmp_path / "strict-sim", [a.kaphila_key for a in accounts.values()],
                     extra_args=["--rate-limit", str(B_LIMIT),
                                 "--rate-window-ms", str(B_WINDOW_MS)]).start()
    yield sim
    sim.stop()


def _stall_report(tgs, postgres, pg_url):
    """What each instance and the server were doing, for a wait that timed
    out: a stuck engine shows on /healthz (limits.engine_stall_ms) and in
    the log; a statement waiting on a lock in pg_stat_activity."""
    lines = []
    for tg in tgs:
        h = tg.healthz()
        lines.append(f"{tg.base_url}: /healthz {h.status_code} {h.text.strip()!r}")
    lines.append(postgres.psql(
        "SELECT string_agg(format('%s %s %s/%s %s', pid, state, wait_event_type, wait_event,"
        " left(regexp_replace(query, '\\s+', ' ', 'g'), 100)), E'\\n') FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()", url=pg_url))
    return "\n".join(lines)


def test_two_instances_on_one_key_stay_within_its_limit_together(make_twigate, strict_sim,
                                                                 receiver, postgres, pg_url):
    """Each instance alone would allow the key's whole limit per window, so
    two would spend twice it; with the shared log in the database, 16 calls
    (three counted requests each) created on both at once all complete and
    Kaphila refuses none (no 429 in the simulator's count)."""
    tgs = [make_twigate(external_sim=strict_sim,
                        overrides={"db.url": pg_url, "cluster.instance_id": f"b{i}",
                                   "kaphila.rate_window_ms": B_WINDOW_MS})
           for i in (1, 2)]
    clients = [tg.client() for tg in tgs]
    sids = []
    for _ in range(8):
        for client in clients:
            sids.append(client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                            twiml=SAY_HANGUP,
                                            status_callback=receiver.url("/b/st")).sid)
    # 48 counted requests at 12 per window, each slot held in the shared log
    # for the window plus kaphila.timeout_ms (9 s): four holds at the least,
    # 36 s; under ASan on a loaded CI machine 9 of 16 had ended at 90 s.
    # Seen once (2026-12-08, ASan, make check): 12 of 16 at 150 s and one
    # instance silent for two minutes; the report says where it was.
    try:
        receiver.wait_for_requests("/b/st", count=16, timeout=150)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{_stall_report(tgs, postgres, pg_url)}") from None
    statuses = {r.params["CallSid"]: r.params["CallStatus"]
                for r in receiver.requests("/b/st")}
    assert set(statuses) == set(sids) and set(statuses.values()) == {"completed"}, statuses
    k = tgs[0].sim_key()
    assert k["requests"]["makecall"] == 16, k
    assert k["rateLimited"] == 0, k


def paused_until_adopted(pg_url, sid, paused, survivor, timeout, message):
    """SIGSTOP of paused until survivor owns sid (at most timeout s), then
    SIGCONT: the woken instance finds itself fenced and exits, status 3."""
    import signal
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: owner(pg_url, sid) == instance_name(survivor), timeout=timeout,
                 message=message)
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    assert paused.proc.wait(timeout=10) == 3, paused.log_tail()
    paused.proc = None
    assert "was fenced" in paused.log_text()


def test_an_instance_paused_past_its_lease_is_fenced_and_exits(cluster, receiver, pg_url):
    """SIGSTOP of the owner (a stalled VM, a long GC pause): the other adopts
    the call once the lease runs out; when the paused one wakes it finds
    itself fenced and exits with status 3 (docs/twigate.8), and the call goes
    on under the adopter to `completed`, each callback once."""
    client, sid, paused, survivor = ivr_in_gather(cluster, receiver, pg_url, "/cl/ivr2", "/cl/st3")
    paused_until_adopted(pg_url, sid, paused, survivor, timeout=5,
                         message="the call was not adopted within 5 s of the pause")
    goes_on_at(survivor, client, receiver, sid, "4")
    assert_callbacks_once(receiver, "/cl/st3", sid)


SLOW_OWN_WRITES = """
CREATE FUNCTION twigate_test_slow() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$;
CREATE TRIGGER twigate_test_slow BEFORE UPDATE ON calls FOR EACH ROW
  WHEN (OLD.owner = %s AND NEW.owner = OLD.owner) EXECUTE FUNCTION twigate_test_slow();
"""


def test_an_owner_paused_inside_its_transaction_does_not_keep_its_calls(cluster, receiver,
                                                                       pg_url):
    """SIGSTOP while the owner's batch holds the call's row: it is applying an
    update that reached the other instance (so came through the inbox), its
    UPDATE of the row done, its COMMIT not yet sent. The server ends the
    stopped session once it has sat idle in its transaction for a lease
    (idle_in_transaction_session_timeout, set at join), which rolls the batch
    back and frees the row; the other instance adopts the call with the
    update's inbox row and applies the update itself. Without that limit the
    adopter's FOR UPDATE SKIP LOCKED passes the call over for as long as the
    pause lasts. The owner's own writes of the row are made to take 1 s in
    the server, so the stop is sure to land inside one."""
    client, sid, paused, survivor = ivr_in_gather(cluster, receiver, pg_url, "/cl/ivr6", "/cl/st7")
    _sql_do(pg_url, SLOW_OWN_WRITES, (instance_name(paused),))
    r = survivor.http("POST", f"{survivor.account_uri()}/Calls/{sid}.json",
                      data={"TimeLimit": "600"})
    assert r.status_code == 200, r.text
    wait_for(lambda: _sql(pg_url, "SELECT count(*) FROM pg_stat_activity"
                                  " WHERE wait_event = 'PgSleep'")[0][0] > 0,
             timeout=10, message="the owner never wrote the call's row")
    # The write's last second, the lease-long idle limit, one adoption pass.
    paused_until_adopted(pg_url, sid, paused, survivor, timeout=10, message=(
        "the call was not adopted while its owner sat stopped in a transaction"))
    wait_for(lambda: _sql(pg_url, "SELECT params::json->>'time_limit' FROM calls WHERE sid = %s",
                          (sid,))[0][0] == "600",
             timeout=10, message="the update was lost with the rolled-back batch")
    goes_on_at(survivor, client, receiver, sid, "5")
    assert_callbacks_once(receiver, "/cl/st7", sid)


def test_the_owner_is_woken_by_a_notification_not_only_by_its_poll(make_twigate, make_haproxy,
                                                                  slow_sim, receiver, pg_url):
    """With the inbox polled only once a minute, calls whose events the
    balancer splits between the instances still run at once: the receiver's
    NOTIFY wakes the owner, which reads its inbox on the notification."""
    lb, tgs = start_cluster(make_twigate, make_haproxy, slow_sim, pg_url,
                            **{"cluster.poll_ms": 60000})
    client = lb_client(lb, tgs[0])
    receiver.set("/cl/short2", twiml="<Response><Say>Hello there.</Say><Hangup/></Response>")
    sids = [create(client, receiver, "/cl/short2", status_callback=receiver.url("/cl/st4"),
                   status_callback_event=ALL_EVENTS).sid for _ in range(6)]
    for sid in sids:   # well within the minute a poll would take
        assert tgs[0].wait_for_status(client, sid, {"completed", "failed"}, timeout=30).status \
            == "completed"
    assert sum(inbox_forwarded(tg) for tg in tgs) > 0
    assert sum(metric(tg, 'twigate_cluster_inbox_reads_total{by="notify"}') for tg in tgs) > 0


def test_a_dead_instances_queue_is_dialled_once_by_the_other(make_twigate, make_haproxy,
                                                             strict_sim, receiver, pg_url):
    """Ten calls on one instance of a key allowed 12 requests per 4 s: most
    wait in its queue. Killed (SIGKILL) while they wait, its calls are
    adopted by the other instance, which dials the queue in order: every call
    ends, and none is dialled twice (one /makecall per CallSid at the
    simulator) nor refused by Kaphila."""
    lb, tgs = start_cluster(make_twigate, make_haproxy, strict_sim, pg_url,
                            **{"kaphila.rate_window_ms": B_WINDOW_MS})
    owner_tg, other = tgs
    client = owner_tg.client()
    sids = [client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SAY_HANGUP,
                                status_callback=receiver.url("/q/st")).sid for _ in range(10)]
    assert {owner(pg_url, s) for s in sids} == {"tg1"}

    def queued():
        return _sql(pg_url, "SELECT count(*) FROM calls WHERE sid = ANY(%s)"
                            " AND status = 'queued' AND kaphila_id = ''", (sids,))[0][0]
    wait_for(lambda: 0 < queued() < 10, timeout=20, message="no queue formed on tg1")
    owner_tg.kill9()
    # Calls tg1 ended before the kill stay its rows (an ended call owing
    # nothing is not adopted); read at once, seconds before any adoption.
    ended_on_tg1 = {r[0] for r in _sql(pg_url, "SELECT sid FROM calls WHERE sid = ANY(%s)"
                                               " AND status NOT IN ('queued', 'ringing',"
                                               " 'in-progress')", (sids,))}
    # Every call's final callback (a delivery tg1 made but had not marked
    # done when killed is made again by tg2, with the same idempotency
    # token: at least once, docs/scale-out.md; so count calls, not requests).
    def final_statuses():
        return {r.params["CallSid"]: r.params["CallStatus"] for r in receiver.requests("/q/st")}
    wait_for(lambda: set(final_statuses()) == set(sids), timeout=120,
             message="not every call reached its final callback")
    final = final_statuses()
    # A /makecall that was in flight at the kill cannot be known to have been
    # dialled: that call is failed with 20500 (docs/kaphila.md); the rest complete.
    assert sum(st == "completed" for st in final.values()) >= 8, final
    assert set(final.values()) <= {"completed", "failed"}, final
    assert {owner(pg_url, s) for s in sids if s not in ended_on_tg1} == {"tg2"}
    import requests
    calls = requests.get(f"{other.sim_url}/sim/calls", timeout=5).json()["calls"]
    dialled = [c["callSid"] for c in calls if c.get("callSid") in sids]
    assert len(dialled) == len(set(dialled)), f"a call was dialled twice: {dialled}"
    assert other.sim_key()["rateLimited"] == 0


def test_a_clean_stop_hands_its_calls_over_at_once(make_twigate, make_haproxy, slow_sim,
                                                   receiver, pg_url):
    """SIGTERM (a deploy): the stopping instance ends its lease as it goes,
    so the other adopts its live IVR at its next pass, not after the lease
    (a minute here), and the call carries on there."""
    lb, tgs = start_cluster(make_twigate, make_haproxy, slow_sim, pg_url,
                            **{"cluster.lease_ms": 60000})
    client = lb_client(lb, tgs[0])
    receiver.set("/cl/ivr3", twiml=IVR)
    receiver.set("/resume/done", twiml=DONE)
    sid = create(client, receiver, "/cl/ivr3").sid
    first = owner(pg_url, sid)
    leaving, staying = (tgs[0], tgs[1]) if first == "tg1" else (tgs[1], tgs[0])
    wait_for(lambda: (checkpoint(pg_url, sid) or {}).get("mode") == 1, timeout=20,
             message="no <Gather> checkpoint")
    leaving.stop()
    wait_for(lambda: owner(pg_url, sid) == ("tg2" if first == "tg1" else "tg1"), timeout=10,
             message="the call was not handed over at once")
    goes_on_at(staying, client, receiver, sid, "9")


CUT_OFF = """
CREATE FUNCTION twigate_test_cut_off() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'cut off from the database (test)'; END $$;
CREATE TRIGGER twigate_test_cut_off BEFORE UPDATE ON instances FOR EACH ROW
  WHEN (OLD.id = %s AND NEW.state = 'up') EXECUTE FUNCTION twigate_test_cut_off();
"""
UNCUT = ("DROP TRIGGER IF EXISTS twigate_test_cut_off ON instances;"
         " DROP FUNCTION IF EXISTS twigate_test_cut_off()")


def test_an_instance_that_cannot_renew_its_lease_sends_kaphila_nothing(cluster, receiver,
                                                                        pg_url):
    """The owner can no longer renew its lease (its renewals fail, as when it
    is cut off from the database) but runs on. Once the lease has run out the
    other instance adopts the call, and an update sent to the first instance
    meanwhile is not carried out there: its Kaphila command is held for a
    renewal that never comes. When the database takes the first instance's
    renewal again it finds itself fenced and exits, status 3, the command
    unsent; the call goes on under the adopter. (Without the hold the update's
    <Say> reaches the simulator from the fenced instance.)"""
    client, sid, cut, survivor = ivr_in_gather(cluster, receiver, pg_url, "/cl/ivr4", "/cl/st5")
    try:
        _sql_do(pg_url, CUT_OFF, (instance_name(cut),))
        wait_for(lambda: owner(pg_url, sid) == instance_name(survivor),
                 timeout=10, message="the call was not adopted once the lease ran out")
        stale = "These words come from an instance that was fenced."
        r = cut.http("POST", f"{cut.account_uri()}/Calls/{sid}.json",
                     data={"Twiml": f"<Response><Say>{stale}</Say></Response>"})
        assert r.status_code < 500, r.text

        def said_stale():
            return ("/voice", {"text": stale}) in kaphila_requests(survivor, sid)
        wait_for(lambda: said_stale() or metric(cut, "twigate_cluster_commands_held_total") > 0,
                 timeout=10, message="the update was neither held nor sent")
        assert not said_stale(), "a fenced instance sent Kaphila a command"
    finally:
        _sql_do(pg_url, UNCUT)
    assert cut.proc.wait(timeout=10) == 3, cut.log_tail()
    cut.proc = None
    assert "held Kaphila commands unsent" in cut.log_text()
    goes_on_at(survivor, client, receiver, sid, "6")
    assert ("/voice", {"text": stale}) not in kaphila_requests(survivor, sid)
    assert_callbacks_once(receiver, "/cl/st5", sid)


def test_commands_held_for_a_renewal_go_out_once_it_succeeds(make_twigate, slow_sim, receiver,
                                                             pg_url):
    """One instance on PostgreSQL whose renewals fail for a while (nobody
    else is up to fence it): an update made meanwhile waits, held, and is
    carried out as soon as a renewal succeeds again; the call goes on.
    Meanwhile /readyz says `503 lease not renewed`, so a balancer sends the
    instance nothing new."""
    tg = make_twigate(external_sim=slow_sim,
                      overrides={"db.url": pg_url, "cluster.instance_id": "solo"})
    client = tg.client()
    receiver.set("/cl/ivr5", twiml=IVR)
    sid = create(client, receiver, "/cl/ivr5").sid
    wait_for(lambda: (checkpoint(pg_url, sid) or {}).get("mode") == 1, timeout=20,
             message="no <Gather> checkpoint")
    words = "Said once the lease was renewed."
    try:
        _sql_do(pg_url, CUT_OFF, ("solo",))
        wait_for(lambda: _sql(pg_url, "SELECT lease_until_ms < twigate_now_ms() FROM instances"
                                      " WHERE id = 'solo'")[0][0],
                 timeout=10, message="the lease did not run out")
        r = client.calls(sid).update(twiml=f"<Response><Say>{words}</Say><Hangup/></Response>")
        assert r.sid == sid
        wait_for(lambda: metric(tg, "twigate_cluster_commands_held_total") > 0, timeout=10,
                 message="the update's command was not held")
        assert ("/voice", {"text": words}) not in kaphila_requests(tg, sid)
        ready = tg.http("GET", "/readyz", auth=None)
        assert (ready.status_code, ready.text) == (503, "lease not renewed\n")
    finally:
        _sql_do(pg_url, UNCUT)
    wait_kaphila(tg, sid, lambda reqs: ("/voice", {"text": words}) in reqs, timeout=10,
                 what="the held command was not sent after the renewal")
    assert tg.wait_for_status(client, sid, {"completed", "failed"}, timeout=20).status == \
        "completed"
    assert "held Kaphila command(s) sent" in tg.log_text()
    assert tg.http("GET", "/readyz", auth=None).status_code == 200
