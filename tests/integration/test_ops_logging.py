"""Operations, logs (issue 7, docs/operations.md: Logs): no secret ever
reaches twigate's log (auth tokens, Kaphila keys, API key secrets, the
metrics and admin tokens, Basic credentials, webhook signatures, secrets of a
SIGHUP reload) whatever the workload, every plain-text line has the
documented shape, and with log.json every stderr line is a JSON object whose
context fields (request_id, account_sid, call_sid) are right.

Every test starts the daemon it needs (make_twigate), so the log's contents
belong to that test alone."""

import base64
import json
import os
import re
import signal
import subprocess

import requests

from harness import DEFAULT_FROM, SHORT_TWIML, free_port, fresh_number, wait_for
from harness.ops import (ALL_EVENTS, TERMINAL, binary, child_env, reload_config, session,
                         wait_log)

SID_RE = {p: re.compile(rf"{p}[0-9a-f]{{32}}") for p in ("AC", "CA", "SK")}


TEXT_LINE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARN|ERROR) \[[a-z_-]+\]"
    r"( req=RQ[0-9a-f]+)?( AC[0-9a-f]{32})?( CA[0-9a-f]{32})? \S.*")
# What twigate prints on stdout at start-up (the harness logs stdout too).
STDOUT_LINE = re.compile(r"twigate \S+ listening on http://\S+ \(public URL \S+\)"
                         r"|Kaphila: \S+( \(built-in simulator\))?")


def _secret_workload(tg, receiver, metrics_token, admin_token):
    """Drives every code path that handles a credential; returns the extra
    secret strings the workload itself introduced."""
    extra = []
    a, b = tg.accounts["a"], tg.accounts["b"]
    receiver.set("/voice", "<Response><Say>hello</Say></Response>")
    ca, cb, ck = tg.client("a"), tg.client("b"), tg.client("a", api_key=True)
    dead_pw = "pw" + os.urandom(10).hex()
    extra.append(dead_pw)
    sids = []
    for client in (ca, cb, ck):
        sids.append(client.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                        url=receiver.url("/voice"),
                                        status_callback=receiver.url("/status"),
                                        status_callback_event=ALL_EVENTS).sid)
    # Basic credentials inside a callback URL, to a dead port (11205).
    sids.append(ca.calls.create(
        to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
        status_callback=f"http://user:{dead_pw}@127.0.0.1:{free_port()}/cb").sid)
    for sid in sids:
        tg.wait_for_status(ca if sid != sids[1] else cb, sid, TERMINAL, timeout=15)
    receiver.wait_for_requests("/status", 12)
    # Wrong credentials of every kind.
    for user, pw in ((a.sid, "x" + os.urandom(15).hex()), (a.api_key_sid, "y" + os.urandom(15).hex()),
                     (b.sid, a.auth_token), (a.sid, b.auth_token)):
        extra.append(pw)
        r = tg.http("GET", tg.account_uri("a") + "/Calls.json", auth=(user, pw))
        assert r.status_code == 401
    wrong_bearer = "wb" + os.urandom(12).hex()
    extra.append(wrong_bearer)
    assert tg.http("GET", "/metrics", auth=None,
                   headers={"Authorization": f"Bearer {wrong_bearer}"}).status_code == 401
    assert tg.http("GET", "/metrics", auth=None,
                   headers={"Authorization": f"Bearer {metrics_token}"}).status_code == 200
    # The simulator's control API with its admin token, and Kaphila's API
    # with a wrong key.
    s = session()
    s.get(f"{tg.sim_url}/sim/calls/{sids[0]}", headers={"X-Sim-Admin-Token": admin_token},
          timeout=5)
    bad_key = "ak_bad_" + os.urandom(8).hex()
    extra.append(bad_key)
    s.post(f"{tg.sim_url}/makecall", headers={"Authorization": f"Bearer {bad_key}"},
           json={"to": "+14155550100"}, timeout=5)
    # Signed webhooks: their signatures are secrets too.
    extra += [r.signature for r in receiver.requests() if r.signature]
    return extra


def test_no_secret_in_the_log(make_twigate, receiver):
    metrics_token = "mt_" + os.urandom(12).hex()
    admin_token = "adm_" + os.urandom(12).hex()
    tg = make_twigate(overrides={"metrics.token": metrics_token,
                                 "sim.admin_token": admin_token,
                                 "log.level": "debug"})
    secrets_ = [metrics_token, admin_token]
    for acct in tg.accounts.values():
        secrets_ += [acct.auth_token, acct.kaphila_key]
        if acct.api_key_secret:
            secrets_.append(acct.api_key_secret)
    for acct in tg.accounts.values():
        for user, pw in ((acct.sid, acct.auth_token), (acct.api_key_sid, acct.api_key_secret)):
            if user:
                secrets_.append(base64.b64encode(f"{user}:{pw}".encode()).decode())
    secrets_ += _secret_workload(tg, receiver, metrics_token, admin_token)

    # Reloads: a refused change of a secret that needs a restart, and a
    # token rotation that applies. Neither value may be logged.
    new_admin, new_token = "adm_" + os.urandom(12).hex(), os.urandom(16).hex()
    secrets_ += [new_admin, new_token]
    mark = reload_config(tg, dict(tg.settings, **{"sim.admin_token": new_admin}))
    wait_log(tg, r"SIGHUP.*sim\.admin_token", mark)
    mark = reload_config(tg, dict(tg.settings, **{"account.b.auth_token": new_token}))
    wait_log(tg, r"configuration reloaded", mark)
    b = tg.accounts["b"]
    assert tg.http("GET", tg.account_uri("b") + ".json", auth=(b.sid, new_token)).status_code == 200
    tg.stop()

    log = tg.log_text()
    assert "notification 11205" in log, "the workload did not run as planned"
    found = sorted({s for s in secrets_ if s and s in log})
    assert not found, "secrets found in twigate's log: " + ", ".join(
        f"{s[:6]}… on line: {next(l for l in log.splitlines() if s in l)[:200]!r}"
        for s in found)
    # Plain text: every log line has the documented shape.
    odd = [l for l in log.splitlines()
           if l and not l.startswith("==== start ") and not TEXT_LINE.fullmatch(l)
           and not STDOUT_LINE.fullmatch(l)]
    assert not odd, f"log lines not in the documented format: {odd[:5]}"


def _spawn_split(tg):
    """Starts tg with stderr alone in tg.log_path and stdout in stdout.log."""
    out = open(os.path.join(tg.workdir, "stdout.log"), "wb")
    err = open(tg.log_path, "ab")
    tg.proc = subprocess.Popen([binary("twigate"), "--config", tg.config_path],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               cwd=tg.workdir, env=child_env())
    out.close()
    err.close()

    def up():
        assert tg.proc.poll() is None, f"twigate exited; log:\n{tg.log_tail()}"
        try:
            return tg.healthz().status_code == 200
        except requests.RequestException:
            return False
    wait_for(up, 10, message="twigate did not start")


def test_json_log_lines_carry_context(make_twigate, receiver):
    tg = make_twigate(overrides={"log.json": True, "log.level": "debug"}, start=False)
    _spawn_split(tg)
    c = tg.client("a")
    acct = tg.accounts["a"]
    receiver.set("/voice", SHORT_TWIML)
    ok_sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"),
                            status_callback=receiver.url("/status")).sid
    dead_sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                              status_callback=f"http://127.0.0.1:{free_port()}/x").sid
    tg.sim_fail(500, endpoint="/makecall")
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
    assert r.status_code == 201, r.text   # the dial fails later: a failed call
    for sid in (ok_sid, dead_sid, r.json()["sid"]):
        tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    receiver.wait_for_requests("/status", 1)
    assert tg.http("GET", tg.account_uri("a") + ".json", auth=(acct.sid, "bad")).status_code == 401
    mark = len(tg.log_text())
    tg.proc.send_signal(signal.SIGHUP)
    wait_log(tg, r"configuration reloaded", mark)
    wait_for(lambda: "notification 11205" in tg.log_text(), 10)
    tg.stop()

    lines = [l for l in tg.log_text().splitlines() if l]
    assert len(lines) >= 5, lines
    recs = []
    for l in lines:
        try:
            rec = json.loads(l)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {l!r}")
        assert isinstance(rec, dict), l
        # Context fields without a value are null (or absent): treat alike.
        rec = {k: v for k, v in rec.items() if v is not None}
        for k in ("ts", "level", "module", "msg"):
            assert isinstance(rec.get(k), str), f"{k} missing in {l}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"]), rec["ts"]
        assert rec["level"] in ("DEBUG", "INFO", "WARN", "ERROR"), rec
        assert set(rec) <= {"ts", "level", "module", "msg", "request_id", "account_sid",
                            "call_sid"}, rec
        for k, rx in (("account_sid", SID_RE["AC"]), ("call_sid", SID_RE["CA"]),
                      ("request_id", re.compile(r"RQ[0-9a-f]+"))):
            if k in rec:
                assert rx.fullmatch(rec[k]), (k, rec)
        # A line that names a call in its text carries it as call_sid.
        for sid in SID_RE["CA"].findall(rec["msg"]):
            assert rec.get("call_sid") == sid, f"line names {sid} without call_sid: {l}"
        recs.append(rec)

    def lines_of(sid):
        return [r for r in recs if r.get("call_sid") == sid]
    for sid in (ok_sid, dead_sid):
        assert lines_of(sid), f"no log line carries call_sid {sid}"
        assert all(r.get("account_sid") == acct.sid for r in lines_of(sid)), lines_of(sid)
    hits = [r for r in lines_of(dead_sid) if "11205" in r["msg"]]
    assert hits and hits[0]["level"] == "WARN", lines_of(dead_sid)
    auth = [r for r in recs if "authentication failed" in r["msg"]]
    assert auth and all("request_id" in r for r in auth), auth
    refused = [r for r in recs if "origination failed" in r["msg"]]
    assert refused and all(r.get("call_sid") and r.get("account_sid") == acct.sid
                           for r in refused), refused
    assert any(r["module"] == "main" and "reloaded" in r["msg"] for r in recs)
