"""Kaphila's refusals on call creation, seen through the official SDK
(docs/kaphila.md): each maps to the documented Twilio code and HTTP status,
and nothing is left behind — the customer was never told the call exists.
Failures are injected with the simulator's control API; a Kaphila that
answers garbage or nothing at all is a tiny local server."""

import http.server
import json
import threading

import pytest
from twilio.base.exceptions import TwilioRestException

from harness import DEFAULT_FROM, fresh_number, wait_for

HANGUP = "<Response><Hangup/></Response>"


def call_count(tg):
    r = tg.http("GET", tg.account_uri() + "/Calls.json", params={"PageSize": 1000})
    assert r.status_code == 200, r.text
    return len(r.json()["calls"])


@pytest.mark.parametrize("status,code,http_status", [
    (401, 20500, 500),   # the gateway's key is wrong, not the caller's credentials
    (402, 20005, 403),
    (429, 20429, 429),
    (500, 20500, 500),
    (503, 20503, 503),
])
def test_makecall_failure_maps_to_twilio_error(twigate, status, code, http_status):
    client = twigate.client()
    before = call_count(twigate)
    twigate.sim_fail(status, count=1, endpoint="/makecall",
                     key=twigate.accounts["a"].kaphila_key)
    with pytest.raises(TwilioRestException) as exc:
        client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP)
    assert exc.value.status == http_status
    assert exc.value.code == code
    assert "Kaphila" in exc.value.msg
    assert call_count(twigate) == before, "a refused call must not be stored"
    # The injection was for one request only: the next create works.
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP)
    assert call.status == "queued"


def test_failure_of_one_key_leaves_other_accounts_alone(twigate):
    twigate.sim_fail(429, count=1, endpoint="/makecall",
                     key=twigate.accounts["a"].kaphila_key)
    call = twigate.client("b").calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP)
    assert call.status == "queued"
    twigate.sim_clear_fail()


class _FakeKaphila(http.server.BaseHTTPRequestHandler):
    """Answers every request with what the test set on the server."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        srv = self.server
        srv.seen.append((self.path, self.headers.get("Authorization")))
        if srv.mode == "hang":
            srv.release.wait(10)
            return
        body = b"<html>definitely not json</html>" if srv.mode == "garbage" else \
            json.dumps({"success": False, "error": "nope"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_kaphila():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeKaphila)
    srv.daemon_threads = True
    srv.mode = "garbage"
    srv.seen = []
    srv.release = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("mode,code,http_status", [
    ("garbage", 20500, 500),    # 200 with a body that is not JSON
    ("refused", 20500, 500),    # 200 with success=false
    ("hang", 20503, 503),       # no answer within kaphila.timeout_ms
])
def test_broken_kaphila_answers(make_twigate, fake_kaphila, mode, code, http_status):
    fake_kaphila.mode = mode
    url = f"http://127.0.0.1:{fake_kaphila.server_address[1]}"
    tg = make_twigate(overrides={"kaphila.url": url, "kaphila.timeout_ms": 300,
                                 "kaphila.orphan_wait_ms": 200,
                                 "kaphila.reconcile_interval_ms": 100})
    with pytest.raises(TwilioRestException) as exc:
        tg.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP)
    assert (exc.value.status, exc.value.code) == (http_status, code)
    # A lost answer (mode "hang") may still have dialled: the call is kept
    # until the orphan wait and a GET /calls show nothing came of it.
    wait_for(lambda: call_count(tg) == 0, timeout=10)
    # twigate really asked Kaphila, with the account's own key.
    assert fake_kaphila.seen and fake_kaphila.seen[0][0] == "/makecall"
    assert fake_kaphila.seen[0][1] == "Bearer " + tg.accounts["a"].kaphila_key
    # and stays healthy
    assert tg.healthz().status_code == 200


def test_unreachable_kaphila_is_503(make_twigate):
    from harness import free_port
    tg = make_twigate(overrides={"kaphila.url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(TwilioRestException) as exc:
        tg.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP)
    assert (exc.value.status, exc.value.code) == (503, 20503)
    assert "unreachable" in exc.value.msg
