"""The web console (issue 20, docs/console.md): its server part over real
HTTP — login, assets and their security headers, the CSRF token, the live
stream (SSE), the far-end proxy to the simulator and the isolation of
accounts — and, when Debian's chromium and npm puppeteer-core are present,
the console itself in a real browser (tests/node/console_test.js)."""

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from harness import DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, fresh_number, wait_for
from harness.barriers import metric_value, settle_call
from harness.oas import REPO_ROOT

CSP_PARTS = ("default-src 'none'", "script-src 'self'", "style-src 'self'",
             "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'")
GATHER_TWIML = ('<Response><Gather numDigits="1" action="/gathered" timeout="30">'
                '<Say>Press a key</Say></Gather></Response>')


@pytest.fixture(scope="module")
def tg(make_twigate_module):
    return make_twigate_module({"console.enabled": True})


def auth(tg, name="a"):
    a = tg.accounts[name]
    return (a.sid, a.auth_token)


def session(tg, name="a"):
    r = tg.http("GET", "/console/api/session", account=name)
    assert r.status_code == 200, r.text
    return r.json()


def api(tg, name="a"):
    return f"/console/api/2010-04-01/Accounts/{tg.accounts[name].sid}"


def live_call(tg, receiver, twiml=LIVE_TWIML, name="a"):
    receiver.set("/voice", twiml=twiml)
    c = tg.client(name)
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"))
    tg.wait_for_status(c, call.sid, "in-progress")
    return call.sid


class Stream:
    """Reads a console event stream on a thread; events are (name, data)."""

    def __init__(self, tg, name="a"):
        self.events, self.lines = [], []
        self.resp = requests.get(tg.base_url + "/console/api/stream", auth=auth(tg, name),
                                 stream=True, timeout=30)
        assert self.resp.status_code == 200, self.resp.text
        assert self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        ev = None
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                self.lines.append(line)
                if line.startswith("event: "):
                    ev = line[7:]
                elif line.startswith("data: ") and ev:
                    self.events.append((ev, json.loads(line[6:])))
        except Exception:
            pass

    def calls(self, sid):
        return [d for e, d in self.events if e == "call" and d.get("sid") == sid]

    def close(self):
        # The reader thread sits in recv(): closing the file alone would
        # wait for the next byte (up to a 15 s heartbeat on an idle stream).
        try:
            self.resp.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.resp.close()


def test_console_is_off_unless_enabled(twigate):
    r = twigate.http("GET", "/console/")
    assert r.status_code == 404


def test_login_is_the_basic_prompt_and_the_page_has_a_strict_csp(tg):
    r = tg.http("GET", "/console/", auth=None)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == 'Basic realm="twigate console"'
    r = tg.http("GET", "/console/", auth=(tg.accounts["a"].sid, "wrong"))
    assert r.status_code == 401
    r = tg.http("GET", "/console/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    for part in CSP_PARTS:
        assert part in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    # No inline script or style: everything comes from 'self' files.
    assert "<script>" not in r.text and "style=" not in r.text and "<style" not in r.text
    assert tg.http("GET", "/console", allow_redirects=False).headers["Location"] == "/console/"


def test_assets_are_compiled_in_with_strong_etags(tg):
    r = tg.http("GET", "/console/app.js", auth=None)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/javascript")
    etag = r.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert r.content == (REPO_ROOT / "console" / "app.js").read_bytes()
    r2 = tg.http("GET", "/console/app.js", auth=None, headers={"If-None-Match": etag})
    assert r2.status_code == 304
    assert tg.http("GET", "/console/style.css", auth=None).headers["Content-Type"].startswith(
        "text/css")
    assert tg.http("GET", "/console/nope.js", auth=None).status_code == 404
    # The page itself is not served as a public asset.
    assert tg.http("GET", "/console/index.html", auth=None).status_code == 404


def test_session_gives_the_account_and_a_csrf_token(tg):
    s = session(tg)
    assert s["account_sid"] == tg.accounts["a"].sid
    assert len(s["csrf_token"]) == 64 and s["simulator"] is True
    # An API key logs in to its own account, with the same token.
    a = tg.accounts["a"]
    r = tg.http("GET", "/console/api/session", auth=(a.api_key_sid, a.api_key_secret))
    assert r.status_code == 200 and r.json()["account_sid"] == a.sid
    assert r.json()["csrf_token"] == s["csrf_token"]
    assert session(tg, "b")["csrf_token"] != s["csrf_token"]
    assert tg.http("GET", "/console/api/session", auth=None).status_code == 401


def test_state_changes_need_the_csrf_token(tg, receiver):
    sid = live_call(tg, receiver)
    url = f"{api(tg)}/Calls/{sid}.json"
    r = tg.http("POST", url, data={"Status": "completed"})
    assert r.status_code == 403 and r.json()["status"] == 403
    r = tg.http("POST", url, data={"Status": "completed"}, headers={"X-Twigate-CSRF": "0" * 64})
    assert r.status_code == 403
    # Account b's token does not open account a's calls.
    r = tg.http("POST", url, data={"Status": "completed"},
                headers={"X-Twigate-CSRF": session(tg, "b")["csrf_token"]})
    assert r.status_code == 403
    assert tg.client().calls(sid).fetch().status == "in-progress"
    r = tg.http("POST", url, data={"Status": "completed"},
                headers={"X-Twigate-CSRF": session(tg)["csrf_token"]})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
    wait_for(lambda: f"call update {sid} by {tg.accounts['a'].sid}" in tg.log_text(), 5)


def test_the_stream_pushes_the_accounts_calls_live_and_only_them(tg, receiver):
    sa, sb = Stream(tg, "a"), Stream(tg, "b")
    try:
        sid = live_call(tg, receiver)
        got = wait_for(lambda: [c for c in sa.calls(sid) if c["status"] == "in-progress"], 10)
        assert got[0]["account_sid"] == tg.accounts["a"].sid
        tg.client().calls(sid).update(status="completed")
        wait_for(lambda: [c for c in sa.calls(sid) if c["status"] == "completed"], 10)
        sid_b = live_call(tg, receiver, name="b")
        wait_for(lambda: sb.calls(sid_b), 10)
        assert not sb.calls(sid)
        assert not sa.calls(sid_b)
        assert all(d["account_sid"] == tg.accounts["b"].sid for e, d in sb.events)
    finally:
        sa.close()
        sb.close()


def test_the_far_end_keypad_reaches_the_gather(tg, receiver):
    receiver.set("/gathered", twiml=LIVE_TWIML)
    sid = live_call(tg, receiver, twiml=GATHER_TWIML)
    token = session(tg)["csrf_token"]
    url = f"/console/api/sim/{sid}/digits"
    # No token: refused, nothing pressed.
    assert tg.http("POST", url, data={"Digits": "7"}).status_code == 403
    # Account b may not touch a's call, even with its own token.
    r = tg.http("POST", url, account="b", data={"Digits": "7"},
                headers={"X-Twigate-CSRF": session(tg, "b")["csrf_token"]})
    assert r.status_code == 404
    assert tg.http("GET", f"/console/api/sim/{sid}", account="b").status_code == 404
    r = tg.http("POST", url, data={"Digits": "x"}, headers={"X-Twigate-CSRF": token})
    assert r.status_code == 400
    assert not receiver.requests("/gathered", call_sid=sid)
    r = tg.http("POST", url, data={"Digits": "7"}, headers={"X-Twigate-CSRF": token})
    assert r.status_code in (200, 202), r.text
    req = receiver.wait_for_requests("/gathered", call_sid=sid)[0]
    assert req.params["Digits"] == "7"
    # The transcript, through the console, is the simulator's.
    t = tg.http("GET", f"/console/api/sim/{sid}").json()
    assert t["callSid"] == sid and any(e["event"] == "dtmf.received" for e in t["events"])
    # The call's event token (in /makecall's webhookUrl) is a credential: hidden.
    hook = next(r["body"]["webhookUrl"] for r in t["requests"] if r["path"] == "/makecall")
    assert "/kaphila/events/(hidden)?" in hook
    assert "/kaphila/events/(hidden)" not in json.dumps(tg.sim_get(sid))
    r = tg.http("POST", f"/console/api/sim/{sid}/hangup", headers={"X-Twigate-CSRF": token})
    assert r.status_code in (200, 202), r.text
    tg.wait_for_status(tg.client(), sid, "completed")


def test_the_timeline_shows_each_webhooks_signature(tg, receiver):
    sid = live_call(tg, receiver, twiml='<Response><Say>Hi</Say><Pause length="600"/></Response>')
    sent = receiver.wait_for_requests("/voice", call_sid=sid)[0]

    def logged():   # the webhook and the Kaphila /voice its <Say> became
        ev = tg.http("GET", f"{api(tg)}/Calls/{sid}/Events.json?PageSize=200").json()["events"]
        return ev if len(ev) >= 2 else None
    events = wait_for(logged, 10)
    sigs = tg.http("GET", f"/console/api/calls/{sid}/signatures").json()["signatures"]
    assert len(sigs) == len(events)
    i = next(i for i, e in enumerate(events) if e["request"]["url"] == sent.url)
    assert sigs[i] == sent.signature
    # Kaphila's requests are not signed; another account gets nothing.
    assert any(s is None for s in sigs)
    assert tg.http("GET", f"/console/api/calls/{sid}/signatures", account="b").json() == {
        "signatures": []}
    tg.client().calls(sid).update(status="completed")


def test_the_console_mounts_the_rest_api_for_its_own_account_only(tg, receiver):
    sid = live_call(tg, receiver)
    r = tg.http("GET", f"{api(tg)}/Calls.json?PageSize=5")
    assert r.status_code == 200 and r.json()["calls"][0]["sid"] == sid
    assert tg.http("GET", f"{api(tg)}/Calls/{sid}/Events.json").status_code == 200
    assert tg.http("GET", f"{api(tg)}/Calls.json", account="b").status_code == 401
    tg.client().calls(sid).update(status="completed")


def test_credits_come_from_kaphila_without_the_key(tg):
    r = tg.http("GET", "/console/api/kaphila/me")
    assert r.status_code == 200, r.text
    me = r.json()
    assert isinstance(me["credits"], (int, float)) and "totalCalls" in me
    assert tg.accounts["a"].kaphila_key not in r.text
    assert tg.http("GET", "/console/api/kaphila/me", auth=None).status_code == 401


def test_a_browser_that_stops_reading_is_cut_off(make_twigate):
    """A stream whose reader never reads (tiny receive buffer) while calls keep
    changing: its events pile up to CONSOLE_STREAM_BUF and it is cut off,
    while the API keeps answering (the engine never waits for a stream)."""
    t = make_twigate({"console.enabled": True, "log.level": "info"})
    a = t.accounts["a"]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", t.port))
    cred = base64.b64encode(f"{a.sid}:{a.auth_token}".encode()).decode()
    s.sendall(f"GET /console/api/stream HTTP/1.1\r\nHost: x\r\n"
              f"Authorization: Basic {cred}\r\n\r\n".encode())
    try:
        created = 0
        while "cut off: the browser is not reading" not in t.log_text():
            assert created < 4000, "the stalled stream was never cut off"
            for _ in range(25):
                r = t.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
                assert r.status_code == 201, r.text
                created += 1
        # The connection is closed by the server once the cut is noticed.
        s.settimeout(30)
        while s.recv(65536):
            pass
    finally:
        s.close()
    assert t.http("GET", "/console/api/session").status_code == 200


QUERIES = "twigate_console_stream_queries_total"


# The reconciler's sweep lists each key's calls at Kaphila (GET /calls) once
# per interval, whichever the storage backend, and with no live call it
# touches no call row: the daemon's own clock for timer_barrier.
SWEEP_MS = 1000


def timer_barrier(t, seconds):
    """Waits until the daemon itself has seen `seconds` more seconds pass:
    seconds + 1 more sweeps of its reconciler (each SWEEP_MS after the last
    one began), counted by the simulator as key a's GET /calls ("other")."""
    def sweeps():
        return t.sim_key("a")["requests"]["other"]
    start = sweeps()
    wait_for(lambda: sweeps() >= start + seconds + 1, seconds + 20, interval=0.1,
             message="the reconciler's sweep never came")


def test_an_idle_stream_reads_nothing_and_one_change_is_one_read(make_twigate):
    """The stream reads the store only after calls changed (docs/console.md,
    The stream): open, it reads once; idle for 3 s, not at all; one change,
    exactly once more."""
    t = make_twigate({"console.enabled": True, "kaphila.reconcile_interval_ms": SWEEP_MS})
    assert metric_value(t, QUERIES) == 0       # shown from 0, before any stream
    c = t.client()
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                         twiml="<Response><Hangup/></Response>").sid
    settle_call(t, sid)
    s = Stream(t)
    try:
        wait_for(lambda: [d for d in s.calls(sid) if d["status"] == "completed"], 10)
        q = metric_value(t, QUERIES)
        assert q == 1, "a new stream reads once"
        timer_barrier(t, 3)
        assert metric_value(t, QUERIES) == q, "an idle stream read the store"
        # One change (a single commit that deletes a call row): one read.
        r = t.http("DELETE", f"{t.account_uri('a')}/Calls/{sid}.json")
        assert r.status_code == 204, r.text
        wait_for(lambda: metric_value(t, QUERIES) == q + 1, 10, interval=0.05)
        timer_barrier(t, 2)
        assert metric_value(t, QUERIES) == q + 1
    finally:
        s.close()


def test_a_burst_of_changes_is_coalesced_into_a_few_reads(make_twigate):
    """100 calls created and ended at once (several call-row commits each):
    the stream reads at most twice a second while they change, so far fewer
    times than there were changes, and still ends with every call's last
    state."""
    t = make_twigate({"console.enabled": True})
    s = Stream(t)
    try:
        wait_for(lambda: metric_value(t, QUERIES) == 1, 10, interval=0.05)
        t0 = time.monotonic()
        c = t.client()

        def create(_):
            return c.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                                  twiml="<Response><Hangup/></Response>").sid
        with ThreadPoolExecutor(8) as pool:
            sids = list(pool.map(create, range(100)))
        for sid in sids:
            t.wait_for_status(c, sid, "completed", timeout=60)
        last = sids[-1]
        wait_for(lambda: [d for d in s.calls(last) if d["status"] == "completed"], 10)
        elapsed = time.monotonic() - t0
        reads = metric_value(t, QUERIES) - 1
        assert 1 <= reads <= 2 * elapsed + 2, (reads, elapsed)
        assert reads < 100 / 4, f"{reads} reads for 100 calls' 300+ changes"
    finally:
        s.close()


def test_a_stop_with_a_stream_open_is_clean(make_twigate, receiver):
    t = make_twigate({"console.enabled": True})
    s = Stream(t)
    wait_for(lambda: any(line.startswith("retry:") for line in s.lines), 5)
    t0 = time.monotonic()
    t.stop()          # asserts exit 0 and a clean log
    assert time.monotonic() - t0 < 8
    s.close()


# ---- the console in a real browser (Debian chromium, npm puppeteer-core) ----

NODE_DIR = REPO_ROOT / "tests" / "node"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_console_in_chromium(tg, receiver):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (scripts/install-deps.sh test)")
    assert (NODE_DIR / "node_modules" / "puppeteer-core").exists(), \
        "npm puppeteer-core missing (scripts/install-deps.sh test)"
    a, b = tg.accounts["a"], tg.accounts["b"]
    receiver.set("/voice", twiml=GATHER_TWIML)
    receiver.set("/gathered", twiml=LIVE_TWIML)
    # A few ended calls first, so that the list (and its screenshot) has some.
    c = tg.client()
    for to in (fresh_number(), fresh_number()[:-4] + "0001", fresh_number()[:-4] + "0002"):
        c.calls.create(to=to, from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    shots = os.environ.get("CONSOLE_SCREENSHOTS", "")
    env = dict(os.environ, CHROMIUM=CHROMIUM, SCREENSHOTS=shots)
    p = subprocess.Popen(["node", "console_test.js", tg.base_url, a.sid, a.auth_token,
                          b.sid, b.auth_token, receiver.url("/voice")],
                         cwd=NODE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    assert p.returncode == 0, (f"console_test.js exited {p.returncode}\n--- stdout\n{out}"
                               f"\n--- stderr\n{err}\n--- twigate\n{tg.log_tail(30)}")
    assert "console_test: OK" in out
    # The browser pressed the key: the <Gather> action request came.
    got = receiver.requests("/gathered")
    assert got and got[-1].params["Digits"] == "5"


# ---- make run shows the console ----

def test_make_run_turns_the_console_on_and_prints_its_url(tmp_path):
    from harness.util import free_port
    from test_demo import Demo
    d = Demo(tmp_path, env={"TWIGATE_LISTEN_PORT": str(free_port())})
    try:
        url = d._field("Console")
        assert url == d.base + "/console/"
        s = requests.Session()
        s.trust_env = False
        assert s.get(url, timeout=10).status_code == 401
        r = s.get(url, auth=(d.sid, d.token), timeout=10)
        assert r.status_code == 200 and "twigate console" in r.text
    finally:
        assert d.interrupt() == 0
    # And off again on request: no Console line, no /console/.
    d = Demo(tmp_path, env={"TWIGATE_LISTEN_PORT": str(free_port()), "TWIGATE_CONSOLE_ENABLED": "0"})
    try:
        assert "Console" not in d.banner
        assert requests.get(d.base + "/console/", timeout=10).status_code == 404
    finally:
        assert d.interrupt() == 0
