"""Operations, the process's life (issue 7, docs/operations.md: Signals):
SIGHUP reloads (accounts added and removed, tokens rotated, a bad file or a
key that needs a restart refused whole), SIGTERM draining under load within
shutdown.grace_ms, and a restart on the same database that delivers every
callback the outbox owes.

What "a clean drain" means here (docs/operations.md, Signals): after SIGTERM
twigate finishes every request it has read; a create that arrives during the
drain gets a complete 503 Twilio error (code 20503); a new connection is
refused at once (it must not be accepted and left hanging until the process
exits). The one race no server can close — a TCP handshake the kernel
completed in the instant before the listening socket closed — is tolerated
only when the connection is reset at once, right at the signal."""

import base64
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from harness import (DEFAULT_FROM, SHORT_TWIML, KaphilaSim, fresh_number, free_port,
                     make_accounts, wait_for)
from harness import db
from harness.ops import ALL_EVENTS, reload_config, session, wait_log
from harness.prom import Exposition


def _signal_and_wait(tg, sig=signal.SIGTERM, timeout=20):
    """Sends sig to tg and waits for the exit; returns (code, seconds)."""
    t0 = time.monotonic()
    tg.proc.send_signal(sig)
    try:
        code = tg.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        tg.proc.kill()
        tg.proc.wait()
        tg.proc = None
        raise AssertionError(f"twigate did not exit within {timeout}s of {sig!r}; "
                             f"log:\n{tg.log_tail()}")
    tg.proc = None
    tg.assert_clean_log()
    return code, time.monotonic() - t0


# ====================================================================
# SIGHUP: reload
# ====================================================================

def _with_account(settings, acct, name):
    out = dict(settings)
    p = f"account.{name}."
    out.update({p + "sid": acct.sid, p + "auth_token": acct.auth_token,
                p + "kaphila_key": acct.kaphila_key})
    return out


def _without_account(settings, name):
    return {k: v for k, v in settings.items() if not k.startswith(f"account.{name}.")}


def _status(tg, acct, password=None):
    return tg.http("GET", f"/2010-04-01/Accounts/{acct.sid}.json",
                   auth=(acct.sid, password or acct.auth_token)).status_code


@pytest.fixture
def new_account():
    """An account no daemon knows yet (random SID and secrets)."""
    return make_accounts()["b"]


@pytest.fixture
def sim_knowing_new_key(tmp_path, accounts, new_account):
    """A standalone kaphila-sim that accepts the new account's key too, as a
    real Kaphila would. Requested before make_twigate, so it outlives twigate."""
    sim = KaphilaSim(tmp_path / "sim", [a.kaphila_key for a in accounts.values()]
                     + [new_account.kaphila_key])
    sim.start()
    yield sim
    sim.stop()


def test_sighup_adds_and_removes_accounts(sim_knowing_new_key, new_account, make_twigate,
                                          receiver):
    new = new_account
    tg = make_twigate(external_sim=sim_knowing_new_key)
    assert _status(tg, new) == 401
    mark = reload_config(tg, _with_account(tg.settings, new, "c"))
    wait_log(tg, r"configuration reloaded \(3 accounts\)", mark)
    wait_for(lambda: _status(tg, new) == 200, 5, message="added account not accepted")
    # The new account places a call and its callback is signed with its token.
    receiver.add_accounts({new.sid: new.auth_token})
    r = tg.http("POST", f"/2010-04-01/Accounts/{new.sid}/Calls.json",
                auth=(new.sid, new.auth_token),
                data={"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML,
                      "StatusCallback": receiver.url("/st")})
    assert r.status_code == 201, r.text
    got = receiver.wait_for_requests("/st", 1, call_sid=r.json()["sid"])
    assert got[0].valid and got[0].signed_by == new.sid

    # Remove account b: its credentials stop working; the others keep working.
    b = tg.accounts["b"]
    assert _status(tg, b) == 200
    mark = reload_config(tg, _without_account(_with_account(tg.settings, new, "c"), "b"))
    wait_log(tg, r"configuration reloaded \(2 accounts\)", mark)
    wait_for(lambda: _status(tg, b) == 401, 5, message="removed account still accepted")
    assert _status(tg, tg.accounts["a"]) == 200
    assert _status(tg, new) == 200


def test_sighup_added_account_can_call_on_the_builtin_simulator(make_twigate, new_account):
    """With kaphila.url = sim (make run), the simulator's keys come from the
    accounts: an account added by SIGHUP must be able to place calls too."""
    tg = make_twigate()
    mark = reload_config(tg, _with_account(tg.settings, new_account, "c"))
    wait_log(tg, r"configuration reloaded", mark)
    r = tg.http("POST", f"/2010-04-01/Accounts/{new_account.sid}/Calls.json",
                auth=(new_account.sid, new_account.auth_token),
                data={"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML})
    assert r.status_code == 201, r.text


def test_sighup_rotates_a_token_and_the_metrics_token(make_twigate, receiver):
    tg = make_twigate(overrides={"metrics.token": "old-metrics-token"})
    a = tg.accounts["a"]
    new_token = os.urandom(16).hex()
    mark = reload_config(tg, dict(tg.settings, **{"account.a.auth_token": new_token,
                                            "metrics.token": "new-metrics-token"}))
    wait_log(tg, r"configuration reloaded", mark)
    wait_for(lambda: _status(tg, a, new_token) == 200, 5)
    assert _status(tg, a) == 401, "the old token still works after rotation"
    hdr = lambda t: {"Authorization": f"Bearer {t}"}
    assert tg.http("GET", "/metrics", auth=None, headers=hdr("old-metrics-token")).status_code == 401
    assert tg.http("GET", "/metrics", auth=None, headers=hdr("new-metrics-token")).status_code == 200
    # Webhooks are signed with the current token.
    receiver.accounts = {a.sid: new_token}
    r = tg.http("POST", tg.account_uri("a") + "/Calls.json", auth=(a.sid, new_token),
                data={"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML,
                      "StatusCallback": receiver.url("/st")})
    assert r.status_code == 201, r.text
    got = receiver.wait_for_requests("/st", 1, call_sid=r.json()["sid"])
    assert got[0].valid, "callback not signed with the rotated token"
    # Back to a's first token, so the harness's teardown can hang calls up.
    mark = reload_config(tg, dict(tg.settings, **{"metrics.token": "new-metrics-token"}))
    wait_log(tg, r"configuration reloaded", mark)


def test_sighup_invalid_file_keeps_the_old_config(make_twigate, new_account):
    tg = make_twigate()
    a, b = tg.accounts["a"], tg.accounts["b"]
    # A typo'd key, plus an account that must not be applied with it.
    bad = _with_account(tg.settings, new_account, "c")
    mark = reload_config(tg, bad, "\n[listen]\nprot = 8081\n")
    line = wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "ERROR" in line and "listen.prot" in line and "twigate.conf:" in line, line
    assert "keeping the old" in line, line
    assert _status(tg, a) == 200 and _status(tg, b) == 200
    assert _status(tg, new_account) == 401, "part of a refused file was applied"
    assert tg.running and tg.healthz().status_code == 200
    # An account without its auth_token is refused as a whole too.
    broken = _with_account(tg.settings, new_account, "c")
    del broken["account.c.auth_token"]
    mark = reload_config(tg, broken)
    line = wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "account.c" in line, line
    assert _status(tg, new_account) == 401 and _status(tg, a) == 200
    # A good file after the bad ones applies.
    mark = reload_config(tg, _with_account(tg.settings, new_account, "c"))
    wait_log(tg, r"configuration reloaded \(3 accounts\)", mark)
    wait_for(lambda: _status(tg, new_account) == 200, 5)


def test_sighup_refuses_keys_that_need_a_restart(make_twigate, new_account):
    tg = make_twigate()
    a = tg.accounts["a"]
    other_port = free_port()
    mark = reload_config(tg, _with_account(dict(tg.settings, **{"listen.port": other_port}),
                                     new_account, "c"))
    line = wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "listen.port" in line and "restart" in line, line
    assert str(tg.port) in line and str(other_port) in line, line
    # The refusal's log line is the barrier: the reload was decided.
    assert _status(tg, a) == 200, "the old port stopped serving"
    assert _status(tg, new_account) == 401, "an account was added by a refused reload"
    with pytest.raises(requests.ConnectionError):
        session().get(f"http://127.0.0.1:{other_port}/healthz", timeout=2)
    # A refused secret is named, never shown.
    mark = reload_config(tg, dict(tg.settings, **{"sim.admin_token": "s3cr3t-admin"}))
    line = wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "sim.admin_token" in line and "s3cr3t-admin" not in line, line


# ====================================================================
# SIGTERM: drain under load, exit within the grace, restart loses nothing
# ====================================================================

class Outcome:
    __slots__ = ("kind", "path", "t_start", "t_connect", "t_connected", "t_sent", "t_end",
                 "new_conn", "status", "body", "error")

    def __init__(self, kind, path):
        self.kind, self.path = kind, path
        self.t_start = time.monotonic()
        self.t_connect = self.t_connected = self.t_sent = self.t_end = None
        self.new_conn = False
        self.status = self.body = self.error = None

    def __repr__(self):
        return (f"<{self.kind} {self.path[-40:]} start={self.t_start:.3f} sent={self.t_sent} "
                f"end={self.t_end:.3f} new_conn={self.new_conn} connected={self.t_connected} "
                f"status={self.status} error={self.error!r} body={(self.body or b'')[:100]!r}>")


class RawClient:
    """HTTP/1.1 over http.client with a timestamp for every phase, so a test
    can tell what the server had been sent when a connection broke. Like
    urllib3, a kept-alive connection the server has closed while idle is
    noticed before reuse and replaced."""

    def __init__(self, port, keepalive, auth):
        self.port, self.keepalive = port, keepalive
        self.auth = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.conn = None

    def _idle_dropped(self):
        sock = self.conn.sock
        return sock is None or bool(select.select([sock], [], [], 0)[0])

    def request(self, method, path, form=None):
        out = Outcome("refused", path)
        if self.conn is not None and self._idle_dropped():
            self.conn.close()
            self.conn = None
        try:
            if self.conn is None:
                out.new_conn = True
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=8)
                out.t_connect = time.monotonic()
                self.conn.connect()
                out.t_connected = time.monotonic()
            body = None
            headers = {"Authorization": self.auth}
            if not self.keepalive:
                headers["Connection"] = "close"
            if form is not None:
                body = urllib.parse.urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            self.conn.request(method, path, body=body, headers=headers)
            out.t_sent = time.monotonic()
            out.kind = "broken"
            resp = self.conn.getresponse()
            out.body = resp.read()
            out.status = resp.status
            out.kind = "response"
            if resp.will_close or not self.keepalive:
                self.conn.close()
                self.conn = None
        except ConnectionRefusedError as e:
            out.error = e
            self.conn = None
        except (OSError, http.client.HTTPException) as e:
            out.error = e
            if out.kind == "refused":         # failed before the request left
                out.kind = "broken"
            if self.conn is not None:
                self.conn.close()
            self.conn = None
        out.t_end = time.monotonic()
        return out


def _load(tg, receiver_url, stop, outcomes, keepalive, fetch):
    """One client thread: creates calls (with status callbacks) and, if
    fetch, fetches what it created, until stop is set."""
    a = tg.accounts["a"]
    cli = RawClient(tg.port, keepalive, (a.sid, a.auth_token))
    base = f"/2010-04-01/Accounts/{a.sid}/Calls"
    mine = []
    while not stop.is_set():
        o = cli.request("POST", base + ".json",
                        {"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML,
                         "StatusCallback": receiver_url,
                         "StatusCallbackEvent": "initiated completed"})
        outcomes.append(o)
        if o.kind == "response" and o.status == 201:
            mine.append(json.loads(o.body)["sid"])
        if fetch and mine:
            outcomes.append(cli.request("GET", f"{base}/{mine[-1]}.json"))
        time.sleep(0.05 if o.kind == "refused" else 0.005)   # pacing: the load's rate


def _check_outcome(o, T):
    """Returns an error string for an unacceptable outcome, else None.
    T: when SIGTERM was sent."""
    creating = o.path.endswith("/Calls.json")
    if o.kind == "response":
        if o.status in (200, 201):
            return None
        if o.status == 503 and creating:
            try:
                body = json.loads(o.body)
            except ValueError:
                return "503 without a JSON body"
            if body.get("code") == 20503 and body.get("status") == 503 and body.get("message"):
                return None
            return f"503 body is not a 20503 Twilio error: {body}"
        return f"unexpected HTTP {o.status}"
    if o.kind == "refused":
        # Refused once the signal is in; a connect begun a moment before it
        # may reach the kernel after the listening socket closed.
        if o.t_connect is not None and o.t_connect >= T - 0.05:
            return None
        return "connection refused before SIGTERM"
    # broken: connected (or reused a connection) and got no complete answer.
    if (o.new_conn and o.t_connected is not None and T - 0.1 <= o.t_connected <= T + 0.5
            and o.t_end <= T + 1.0 and isinstance(o.error, ConnectionResetError)):
        return None                 # the handshake-in-the-backlog race, reset at once
    return "broken connection"


def test_sigterm_during_load_drains_cleanly_and_restart_loses_nothing(make_twigate, receiver):
    grace_ms = 4000
    tg = make_twigate(overrides={"shutdown.grace_ms": grace_ms, "listen.threads": 4})
    receiver.set("/slow", delay=0.8)       # deliveries in flight when SIGTERM comes
    stop, outcomes = threading.Event(), []
    threads = [threading.Thread(target=_load, daemon=True,
                                args=(tg, receiver.url("/slow"), stop, outcomes, ka, fetch))
               for ka, fetch in ((True, True), (True, False), (False, True), (False, False))]
    # Idle kept-alive connections, opened before the signal, for probes.
    probes = [http.client.HTTPConnection("127.0.0.1", tg.port, timeout=5) for _ in range(3)]
    for p in probes:
        p.request("GET", "/healthz")
        assert p.getresponse().read() == b"ok\n"
    for t in threads:
        t.start()
    wait_for(lambda: len(receiver.requests("/slow")) >= 3, 10, message="load did not start")
    time.sleep(0.3)     # pacing: more load in flight when the signal comes

    mark = len(tg.log_text())
    T = time.monotonic()
    tg.proc.send_signal(signal.SIGTERM)
    wait_log(tg, r"signal 15: draining", mark)
    # Readiness reports the drain (the flag is set just after that line, so
    # poll on the same kept-alive connection); liveness does not.

    def readyz():
        probes[0].request("GET", "/readyz")
        r = probes[0].getresponse()
        got = (r.status, r.read())
        return got if got[0] != 200 else None
    ready = wait_for(readyz, 5, message="/readyz never reported the drain")
    probes[1].request("GET", "/healthz")
    live = probes[1].getresponse().status
    # A create on a connection opened before the signal: a clean 20503.
    a = tg.accounts["a"]
    probes[2].request("POST", tg.account_uri("a") + "/Calls.json",
                      body=urllib.parse.urlencode({"To": fresh_number(), "From": DEFAULT_FROM,
                                                   "Twiml": SHORT_TWIML}),
                      headers={"Content-Type": "application/x-www-form-urlencoded",
                               "Authorization": "Basic " + base64.b64encode(
                                   f"{a.sid}:{a.auth_token}".encode()).decode()})
    r = probes[2].getresponse()
    refused_create = (r.status, r.read())
    # A new connection during the drain is refused at once, not left hanging.
    t0 = time.monotonic()
    try:
        s = socket.create_connection(("127.0.0.1", tg.port), timeout=2)
    except ConnectionRefusedError:
        late = "refused"
    else:
        with s:
            s.settimeout(2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                late = s.recv(64).split(b"\r\n")[0].decode() or "closed without an answer"
            except OSError as e:
                late = repr(e)
    late_s = time.monotonic() - t0

    try:
        code = tg.proc.wait(grace_ms / 1000 + 5)
    except subprocess.TimeoutExpired:
        code = None
    exit_s = time.monotonic() - T
    stop.set()
    for t in threads:
        t.join(15)
    for p in probes:
        p.close()
    assert code is not None, f"twigate still running {exit_s:.1f}s after SIGTERM"
    tg.proc = None
    tg.assert_clean_log()
    assert code == 0, f"exit code {code} after SIGTERM; log:\n{tg.log_tail()}"
    assert exit_s <= grace_ms / 1000 + 2.5, f"exit took {exit_s:.1f}s (grace {grace_ms} ms)"
    assert ready == (503, b"draining\n"), f"/readyz during the drain: {ready}"
    assert live == 200, f"/healthz during the drain: {live}"
    assert refused_create[0] == 503, refused_create
    body = json.loads(refused_create[1])
    assert body["code"] == 20503 and body["status"] == 503 and body["message"], body
    assert late == "refused" or late.startswith("HTTP/1.1 "), (
        f"a new connection during the drain was accepted and then: {late} "
        f"(after {late_s:.2f}s)")

    bad = [(err, o) for o in outcomes for err in [_check_outcome(o, T)] if err]
    assert not bad, (f"{len(bad)} of {len(outcomes)} requests ended badly around SIGTERM "
                     f"(t={T:.3f}):\n" + "\n".join(f"{e}: {o}" for e, o in bad[:10]))
    created = [json.loads(o.body)["sid"] for o in outcomes
               if o.kind == "response" and o.status == 201]
    assert created and any(o.t_start > T for o in outcomes), "the load did not span SIGTERM"

    # Restart on the same database: every callback the outbox owes arrives.
    receiver.set("/slow", delay=0)
    tg.start()
    _assert_outbox_delivered(tg, receiver, created)


def _assert_outbox_delivered(tg, receiver, created, timeout=20):
    # Drained means: every call the restart found has ended (the reconciler
    # settles the ones the simulator no longer knows, after its GET, and only
    # then writes their callbacks; with checkpoints that can come after an
    # empty outbox), no status callback is still owed, and the gauge agrees.
    # The gauge alone, or the rows alone, can read "done" a moment too early.
    marks = ",".join("?" * len(created))

    def drained():
        r = tg.http("GET", "/metrics", auth=None)
        live = db.rows(tg, f"SELECT 1 FROM calls WHERE sid IN ({marks}) AND status NOT IN"
                           " ('completed','busy','failed','no-answer','canceled') LIMIT 1",
                       tuple(created))
        return (not live and r.status_code == 200
                and Exposition(r.text).value("twigate_outbox_pending") == 0
                and not db.rows(tg, "SELECT 1 FROM outbox WHERE kind = 'status'"
                                    " AND state != 'done' LIMIT 1"))
    wait_for(drained, timeout, message="the outbox did not drain after the restart")
    rows = db.rows(tg, "SELECT call_sid, seq, idem, state, attempts FROM outbox"
                       " WHERE kind = 'status'")
    assert rows, "no status callbacks were written"
    failed = [r for r in rows if r[3] != "done"]
    notes = db.rows(tg, "SELECT call_sid, error_code, message_text FROM notifications"
                        " WHERE error_code IN (11200, 11205)")
    assert not failed and not notes, (
        f"with the receiver up, {len(failed)} callbacks ended {sorted({r[3] for r in failed})} "
        f"and these failures were recorded: {notes[:3]}")
    seen = {r.header("I-Twilio-Idempotency-Token") for r in receiver.requests()}
    lost = [r for r in rows if r[2] not in seen]
    assert not lost, f"{len(lost)} callbacks never reached the receiver: {lost[:5]}"
    # Each call's callbacks arrived in SequenceNumber order (first arrivals).
    by_call = {}
    for req in receiver.requests():
        sid, seq = req.params.get("CallSid"), int(req.params.get("SequenceNumber", -1))
        by_call.setdefault(sid, [])
        if seq not in by_call[sid]:
            by_call[sid].append(seq)
    for sid, seqs in by_call.items():
        assert seqs == sorted(seqs), (sid, seqs)
    # And every call created before the stop got its callbacks written.
    written = {r[0] for r in rows}
    missing = [sid for sid in created if sid not in written]
    assert not missing, f"calls with no status callback written: {missing[:5]}"


def test_sigterm_does_not_wait_for_idle_connections(make_twigate):
    """Clients keep connections alive (SDK pools, scrapers, load balancers):
    with nothing in flight, an idle kept-alive connection must not hold the
    stop until the grace runs out."""
    grace_ms = 8000
    tg = make_twigate(overrides={"shutdown.grace_ms": grace_ms})
    idle = http.client.HTTPConnection("127.0.0.1", tg.port, timeout=5)
    idle.request("GET", "/healthz")
    assert idle.getresponse().read() == b"ok\n"
    s = session()
    assert s.get(tg.base_url + "/healthz", timeout=5).status_code == 200
    try:
        code, took = _signal_and_wait(tg, timeout=grace_ms / 1000 + 10)
    finally:
        idle.close()
        s.close()
    assert code == 0, tg.log_tail()
    assert took < 2.5, (f"stop took {took:.1f}s with nothing in flight and two idle "
                        f"kept-alive connections (grace {grace_ms} ms)")


def test_sigterm_past_the_grace_leaves_deliveries_for_the_restart(make_twigate, receiver):
    """Deliveries still running when shutdown.grace_ms ends are not failures:
    they stay pending and the next start sends them (same idempotency token)."""
    grace_ms = 500
    tg = make_twigate(overrides={"shutdown.grace_ms": grace_ms})
    receiver.set("/slow", delay=3)
    c = tg.client("a")
    sids = [c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                           status_callback=receiver.url("/slow"),
                           status_callback_event=ALL_EVENTS).sid for _ in range(3)]
    for sid in sids:
        tg.wait_for_status(c, sid, "completed")
    receiver.wait_for_requests("/slow", 3)          # one in flight per call
    code, took = _signal_and_wait(tg)
    assert code == 0, tg.log_tail()
    assert took <= grace_ms / 1000 + 2.5, f"exit took {took:.1f}s with a {grace_ms} ms grace"
    pending = db.one(tg, "SELECT count(*) FROM outbox WHERE state = 'pending'")[0]
    failed = db.rows(tg, "SELECT state, attempts FROM outbox WHERE state != 'pending'"
                         " AND state != 'done'")
    assert not failed, f"deliveries cut by the stop were marked {failed}"
    assert pending == 4 * 3, f"{pending} rows pending, expected all 12"
    receiver.set("/slow", delay=0)
    tg.start()
    _assert_outbox_delivered(tg, receiver, sids)
    for sid in sids:
        got = receiver.requests("/slow", call_sid=sid)
        statuses = []
        for r in sorted(got, key=lambda r: r.t):
            if r.params["CallStatus"] not in statuses:
                statuses.append(r.params["CallStatus"])
        assert statuses == ["initiated", "ringing", "in-progress", "completed"], (sid, statuses)
