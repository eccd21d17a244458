"""Server-side request forgery (issue 16 §1, docs/security.md §1): what a
customer URL may reach.

Every attack of the review is here, driven through the official SDK or the
REST API as one account against another or against twigate itself:
  - the refused forms of loopback/private/odd addresses under the default
    policy (table-driven), for the voice Url and the other URL kinds;
  - the built-in simulator's control API, twigate's API port (/metrics)
    and Kaphila's endpoint, refused even with webhook.allow = 127.0.0.0/8;
  - Kaphila's keep-alive connection, a redirect to a denied name or
    address, the proxy environment, a SIGHUP that denies a receiver whose
    connection is kept alive;
  - the events log keeping non-UTF-8 bodies (lossily) instead of dropping
    them."""

import re
import signal
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML
from harness.daemon import render_config
from harness.util import fresh_number, wait_for

NOTHING = "<Response><Hangup/></Response>"
# Quick failure for the forms that cannot connect at all today (no retry,
# short connect timeout), so the "fails without the fix" run is quick too.
FAST = "#ct=500&rc=0"


# ------------------------------------------------------------ helpers

class Server:
    """A tiny HTTP/1.1 server with keep-alive that records every request and
    the client port of its connection, and answers from `routes`:
    path -> (status, headers, body bytes). Used where the harness receiver
    cannot play the part: redirects, a forward proxy, raw bytes."""

    def __init__(self):
        self.seen = []                 # (method, path or "/proxied", client port)
        self.routes = {}
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                path = self.path.split("?")[0]
                if "://" in path:              # a proxy's absolute-form target
                    path = "/proxied"
                with outer._lock:
                    outer.seen.append((self.command, path, self.client_address[1]))
                status, headers, body = outer.routes.get(path, (200, {}, NOTHING.encode()))
                self.send_response(status)
                self.send_header("Content-Type", headers.get("Content-Type", "text/xml"))
                for k, v in headers.items():
                    if k != "Content-Type":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.port = self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def requests(self, path=None):
        with self._lock:
            return [s for s in self.seen if path is None or s[1] == path]

    def close(self):
        self._srv.shutdown()
        self._srv.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def create(tg, account="a", **params):
    """Creates a call through the REST API (raw, so that any URL form goes
    through unaltered); returns its SID."""
    params.setdefault("To", fresh_number())
    params.setdefault("From", DEFAULT_FROM)
    r = tg.create_call_raw(account=account, **params)
    assert r.status_code == 201, r.text
    return r.json()["sid"]


def notifications(tg, sid, account="a"):
    r = tg.http("GET", tg.account_uri(account) + f"/Calls/{sid}/Notifications.json",
                account=account)
    assert r.status_code == 200, r.text
    return r.json()["notifications"]


def policy_refusal(tg, sid, account="a", timeout=15):
    """Waits for the call's 11200 notification saying the policy refused
    the destination; returns its message text."""
    def found():
        for n in notifications(tg, sid, account):
            r = tg.http("GET", tg.account_uri(account) + f"/Calls/{sid}/Notifications/{n['sid']}.json",
                        account=account)
            # message_text is Twilio's form encoding: Msg=...&url=...
            text = urllib.parse.parse_qs(r.json().get("message_text") or "").get("Msg", [""])[0]
            if n["error_code"] == "11200" and "outbound policy" in text:
                return text
        return None
    return wait_for(found, timeout, interval=0.05,
                    message=f"no 11200 policy notification on {sid}: "
                            f"{[(n['error_code']) for n in notifications(tg, sid, account)]}")


def events(tg, sid, account="a"):
    r = tg.http("GET", tg.account_uri(account) + f"/Calls/{sid}/Events.json?PageSize=1000",
                account=account)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def reload(tg, **changes):
    """Rewrites the daemon's config with changes (None removes a key),
    sends SIGHUP and waits for the reload to be logged."""
    mark = len(tg.log_text())
    settings = dict(tg.settings)
    settings.update(changes)
    tg.settings = settings
    with open(tg.config_path, "w", encoding="utf-8") as f:
        f.write(render_config(settings))
    tg.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in tg.log_text()[mark:], 10,
             message="SIGHUP: no reload logged")


@pytest.fixture(scope="module")
def tg_default(make_twigate_module):
    """webhook.allow and webhook.deny unset: the shipped default."""
    return make_twigate_module(overrides={"webhook.allow": None})


@pytest.fixture(scope="module")
def tg_dev(make_twigate_module):
    """webhook.allow = 127.0.0.0/8, as `make run` and the harness set it."""
    return make_twigate_module()


# ---------------------------------------------- 1. refused forms, by default

LOOPBACK_FORMS = [
    "127.0.0.1", "localhost", "127.1", "127.0.1", "2130706433", "0x7f.1", "0x7f000001",
    "0177.0.0.1", "0", "0.0.0.0", "[::1]", "[::]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]", "[::127.0.0.1]", "[::ffff:0:127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
]
OTHER_FORMS = [
    "10.1.2.3", "172.16.0.1", "172.31.255.254", "192.168.1.1", "100.64.0.1",
    "100.127.255.254", "169.254.169.254", "[fe80::1]", "[fd00::1]", "[fc00::1]",
    "224.0.0.1", "255.255.255.255", "[ff02::1]", "[::ffff:10.0.0.1]", "[::ffff:a9fe:a9fe]",
    "0.1.2.3",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS + OTHER_FORMS)
def test_default_policy_refuses_form(tg_default, receiver, host):
    receiver.set("/voice", NOTHING)
    sid = create(tg_default, Url=f"http://{host}:{receiver.port}/voice{FAST}",
                 FallbackUrl=f"http://{host}:{receiver.port}/fallback{FAST}")
    text = policy_refusal(tg_default, sid)
    assert "refused" in text
    # The call goes on as for an unreachable server: the fallback is tried
    # (and refused too), then the call ends.
    tg_default.wait_for_status(tg_default.client(), sid,
                               {"completed", "failed", "busy", "no-answer", "canceled"})
    assert wait_for(lambda: len([n for n in notifications(tg_default, sid)
                                 if n["error_code"] == "11200"]) >= 2, 10)
    assert not receiver.requests(), [r.url for r in receiver.requests()]


def test_default_policy_refuses_every_url_kind(tg_default, receiver):
    """Status callback, a Gather action, a <Redirect> and a recording
    callback go through the same check as the voice Url."""
    for path in ("/status", "/action", "/redirect", "/recording"):
        receiver.set(path, NOTHING)
    base = f"http://localhost:{receiver.port}"
    twiml = (f'<Response><Record action="{base}/action" recordingStatusCallback="{base}/recording" '
             f'maxLength="1" timeout="1"/><Redirect>{base}/redirect</Redirect></Response>')
    sid = create(tg_default, Twiml=twiml, StatusCallback=f"{base}/status",
                 StatusCallbackEvent="initiated")
    tg_default.wait_for_status(tg_default.client(), sid, {"completed", "failed"})
    wait_for(lambda: len([n for n in notifications(tg_default, sid)
                          if n["error_code"] == "11200"]) >= 3, 15,
             message="every URL kind should be refused with 11200")
    assert not receiver.requests()


def test_public_address_still_allowed_by_default(tg_default):
    """The default refuses ranges, not everything: a public address is
    attempted (TEST-NET-3 is unroutable, so the attempt fails to connect:
    11205, not the policy's 11200)."""
    sid = create(tg_default, Url=f"http://203.0.113.7:9/voice#ct=300&rc=0")
    def code():
        codes = [n["error_code"] for n in notifications(tg_default, sid)]
        return codes or None
    codes = wait_for(code, 15)
    assert "11205" in codes or "11200" in codes
    for n in notifications(tg_default, sid):
        r = tg_default.http("GET", tg_default.account_uri() + f"/Calls/{sid}/Notifications/{n['sid']}.json")
        assert "outbound+policy" not in (r.json().get("message_text") or "")


# ------------------------------------- 2. the review's attacks, with loopback open

def test_sim_transcript_of_another_account_not_readable(tg_dev):
    """Account A cannot GET the built-in simulator's view of B's call (its
    transcript holds B's /kaphila/events/<token>)."""
    client_b = tg_dev.client("b")
    b_call = client_b.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    tg_dev.wait_for_status(client_b, b_call.sid, {"in-progress"})
    sid = create(tg_dev, Url=f"http://127.0.0.1:{tg_dev.sim_port}/sim/calls/{b_call.sid}",
                 Method="GET")
    text = policy_refusal(tg_dev, sid)
    assert "own listening" in text, text
    for ev in events(tg_dev, sid):
        body = (ev.get("response") or {}).get("response_body") or ""
        assert "/kaphila/events/" not in body and b_call.sid not in body, ev
    assert client_b.calls(b_call.sid).fetch().status == "in-progress"
    client_b.calls(b_call.sid).update(status="completed")


def test_status_callback_cannot_hang_up_another_account(tg_dev):
    client_b = tg_dev.client("b")
    b_call = client_b.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    tg_dev.wait_for_status(client_b, b_call.sid, {"in-progress"})
    sid = create(tg_dev, Twiml=SHORT_TWIML,
                 StatusCallback=f"http://127.0.0.1:{tg_dev.sim_port}/sim/calls/{b_call.sid}/hangup",
                 StatusCallbackEvent="initiated")
    policy_refusal(tg_dev, sid)
    # The refusal is recorded after the attempt: had it gone out, B's call
    # would be over by now.
    assert client_b.calls(b_call.sid).fetch().status == "in-progress"
    client_b.calls(b_call.sid).update(status="completed")


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
def test_own_api_port_not_reachable(tg_dev, path):
    sid = create(tg_dev, Url=f"http://127.0.0.1:{tg_dev.port}{path}", Method="GET")
    assert "own listening" in policy_refusal(tg_dev, sid)
    for ev in events(tg_dev, sid):
        body = (ev.get("response") or {}).get("response_body") or ""
        assert "twigate_" not in body and "ok" not in body.lower()[:20], ev


def test_own_listener_refused_then_fallback_used(tg_dev, receiver):
    """A refused Url is an unreachable server: the FallbackUrl is fetched."""
    receiver.set("/fallback", NOTHING)
    sid = create(tg_dev, Url=f"http://127.0.0.1:{tg_dev.port}/metrics",
                 FallbackUrl=receiver.url("/fallback"))
    receiver.wait_for_requests("/fallback", 1, call_sid=sid)
    policy_refusal(tg_dev, sid)


@pytest.mark.parametrize("deny", [None, "127.0.0.1/32"])
def test_kaphila_connection_not_reused_by_customer_url(kaphila_sim, make_twigate, deny):
    """With an external Kaphila, a customer URL naming Kaphila's host:port
    (while twigate's keep-alive connection to it is open) is refused: it
    neither rides that connection nor opens its own. With Kaphila's address
    in webhook.deny, the old code rode the shared keep-alive connection past
    the deny list (no new socket, no check)."""
    tg = make_twigate(overrides={"webhook.deny": deny}, external_sim=kaphila_sim)
    client_b = tg.client("b")
    b_call = client_b.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    tg.wait_for_status(client_b, b_call.sid, {"in-progress"})
    sid = create(tg, Url=f"http://127.0.0.1:{kaphila_sim.port}/sim/calls/{b_call.sid}",
                 Method="GET")
    text = policy_refusal(tg, sid)
    assert "Kaphila" in text or "webhook.deny" in text, text
    for ev in events(tg, sid):
        body = (ev.get("response") or {}).get("response_body") or ""
        assert "/kaphila/events/" not in body and b_call.sid not in body, ev
    client_b.calls(b_call.sid).update(status="completed")


# ------------------------------------------------------- 3. redirects

@pytest.mark.parametrize("target", ["name", "address"])
def test_redirect_hop_is_checked(make_twigate, receiver, server, target):
    """Each redirect hop is judged by its own name and address: a hop to a
    host name in webhook.deny, or to twigate's own API port, is refused."""
    receiver.set("/target", NOTHING)
    tg = make_twigate(overrides={"webhook.deny": "localhost"})
    location = (f"http://localhost:{receiver.port}/target" if target == "name"
                else f"http://127.0.0.1:{tg.port}/metrics")
    server.routes["/start"] = (302, {"Location": location}, b"")
    sid = create(tg, Url=server.url("/start"))
    text = policy_refusal(tg, sid)
    assert server.requests("/start"), "the first hop is allowed"
    assert ("webhook.deny" if target == "name" else "own listening") in text, text
    assert not receiver.requests("/target")


# ------------------------------------------------- 4. proxy environment

def test_proxy_environment_ignored(make_twigate, server, monkeypatch):
    """http_proxy/HTTP_PROXY in twigate's environment carry no customer
    request: the proxy would forward a denied URL."""
    proxy = f"http://127.0.0.1:{server.port}"
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(k, proxy)
    tg = make_twigate()
    sid = create(tg, Url="http://10.20.30.40/voice" + FAST)
    text = policy_refusal(tg, sid)
    assert "10.20.30.40" in text, text
    assert not server.requests("/proxied"), server.requests()


def test_explicit_proxy_is_used(make_twigate, server):
    """webhook.proxy, set by the operator, is used for customer traffic
    (the policy still judges the URL's name and literal address)."""
    tg = make_twigate(overrides={"webhook.proxy": f"http://127.0.0.1:{server.port}"})
    sid = create(tg, Url="http://customer.example/voice")
    wait_for(lambda: server.requests("/proxied"), 10, message="webhook.proxy not used")
    refused = create(tg, Url="http://10.20.30.40/voice")
    policy_refusal(tg, refused)
    assert len(server.requests("/proxied")) == 1
    tg.wait_for_status(tg.client(), sid, {"completed"})


# ------------------------------------------------------------ 5. SIGHUP

def test_sighup_denied_receiver_not_reached_on_kept_connection(make_twigate, server):
    """A keep-alive connection opened under the old policy is not reused
    for customer traffic after a SIGHUP that denies its destination."""
    tg = make_twigate()
    server.routes["/voice"] = (200, {}, NOTHING.encode())
    first = create(tg, Url=server.url("/voice"))
    wait_for(lambda: server.requests("/voice"), 10)
    tg.wait_for_status(tg.client(), first, {"completed"})
    reload(tg, **{"webhook.deny": "127.0.0.1"})
    second = create(tg, Url=server.url("/voice"))
    text = policy_refusal(tg, second)
    assert "webhook.deny" in text, text
    assert len(server.requests("/voice")) == 1, server.requests()


def test_sighup_policy_change_opens_new_connection(make_twigate, server):
    """After a reload that changes the policy, an allowed destination is
    reached over a new connection (the old caches are retired)."""
    tg = make_twigate()
    first = create(tg, Url=server.url("/voice"))
    wait_for(lambda: server.requests("/voice"), 10)
    tg.wait_for_status(tg.client(), first, {"completed"})
    again = create(tg, Url=server.url("/voice"))
    wait_for(lambda: len(server.requests("/voice")) == 2, 10)
    tg.wait_for_status(tg.client(), again, {"completed"})
    ports = [p for _, _, p in server.requests("/voice")]
    assert ports[0] == ports[1], "keep-alive is expected within one policy"
    reload(tg, **{"webhook.deny": "10.99.0.0/16"})
    third = create(tg, Url=server.url("/voice"))
    wait_for(lambda: len(server.requests("/voice")) == 3, 10)
    tg.wait_for_status(tg.client(), third, {"completed"})
    assert server.requests("/voice")[2][2] != ports[0]


# ----------------------------------------------------------- 6. events log

def _lossy_entry(tg, sid, url):
    def entry():
        for ev in events(tg, sid):
            if (ev.get("request") or {}).get("url", "").startswith(url):
                return ev
        return None
    return wait_for(entry, 10, message=f"no events log entry for {url}")


def test_events_log_keeps_invalid_utf8(tg_dev, server):
    server.routes["/latin1"] = (200, {}, b"<Response><Say>caf\xe9 cr\xe8me</Say></Response>")
    sid = create(tg_dev, Url=server.url("/latin1"))
    ev = _lossy_entry(tg_dev, sid, server.url("/latin1"))
    rs = ev["response"]
    assert rs["response_body_lossy"] is True
    assert rs["response_body"] == "<Response><Say>caf\ufffd cr\ufffdme</Say></Response>"
    assert "could not write the call event log" not in tg_dev.log_text()


def test_events_log_keeps_character_cut_at_4k(tg_dev, server):
    head = "<Response><!-- "
    body = head + "a" * (4095 - len(head)) + "\u00e9" + " --><Hangup/></Response>"
    raw = body.encode()
    assert raw[4095:4097] == "\u00e9".encode()      # straddles byte 4096
    server.routes["/long"] = (200, {}, raw)
    sid = create(tg_dev, Url=server.url("/long"))
    ev = _lossy_entry(tg_dev, sid, server.url("/long"))
    rs = ev["response"]
    assert rs["response_body_lossy"] is True
    assert rs["response_body"] == raw[:4095].decode()
    ok = create(tg_dev, Url=server.url("/plain"))
    assert "response_body_lossy" not in _lossy_entry(tg_dev, ok, server.url("/plain"))["response"]


def test_notification_keeps_invalid_utf8_response_body(tg_dev, server):
    # An HTTP 500 answer is an 11200 notification carrying the body; a Latin-1
    # body used to come back as null from Notifications/{NO}.json.
    server.routes["/latin1-500"] = (500, {}, b"erreur: caf\xe9")
    sid = create(tg_dev, Url=server.url("/latin1-500"))

    def body():
        for n in notifications(tg_dev, sid):
            if n["error_code"] == "11200":
                r = tg_dev.http("GET", tg_dev.account_uri() + f"/Calls/{sid}/Notifications/{n['sid']}.json")
                assert r.status_code == 200, r.text
                return r.json()
        return None
    full = wait_for(body, 10, message=f"no 11200 notification on {sid}")
    assert full["response_body"] == "erreur: caf\ufffd"
