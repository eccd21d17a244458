"""Kaphila's refusals of a dial, seen through the official SDK
(docs/kaphila.md). Creates are answered 201 `queued` before the dial
(Twilio's queue, issue 19), so a refusal is what Twilio shows for a call it
could not place: the call ends `failed`, with a notification carrying the
documented Twilio code and the `completed` status callback (CallStatus
failed). A 429 is not a refusal: the dial waits and goes again. Failures
are injected with the simulator's control API; a Kaphila that answers
garbage or nothing at all is a tiny local server."""

import http.server
import json
import threading

import pytest

from harness import DEFAULT_FROM, fresh_number, wait_for

HANGUP = "<Response><Hangup/></Response>"


def failed_with(tg, receiver, sid, code, timeout=15):
    """Waits for sid's completed callback (CallStatus failed) and returns
    the messages of its notifications with code."""
    cb = receiver.wait_for_requests("/status", call_sid=sid, timeout=timeout)[0]
    assert cb.params["CallStatus"] == "failed", cb.params
    call = tg.client().calls(sid).fetch()
    assert call.status == "failed"
    notes = tg.client().calls(sid).notifications.list()
    got = [n for n in notes if n.error_code == str(code)]
    assert got, [(n.error_code, n.message_text) for n in notes]
    return [n.message_text for n in got]


@pytest.mark.parametrize("status,code", [
    (401, 20500),   # the gateway's key is wrong, not the caller's credentials
    (500, 20500),
    (503, 20503),
])
def test_makecall_failure_fails_the_call(twigate, receiver, status, code):
    client = twigate.client()
    twigate.sim_fail(status, count=1, endpoint="/makecall",
                     key=twigate.accounts["a"].kaphila_key)
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                               status_callback=receiver.url("/status"))
    assert call.status == "queued"
    msgs = failed_with(twigate, receiver, call.sid, code)
    assert any("Kaphila" in m for m in msgs), msgs
    # The injection was for one request only: the next call is placed.
    call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                               status_callback=receiver.url("/status"))
    cb = receiver.wait_for_requests("/status", call_sid=call.sid, timeout=15)[0]
    assert cb.params["CallStatus"] == "completed"


def test_makecall_402_fails_the_call_as_account_not_active(make_twigate, receiver):
    tg = make_twigate(overrides={"kaphila.credits_poll_ms": 200})
    tg.sim_fail(402, count=1, endpoint="/makecall", key=tg.accounts["a"].kaphila_key)
    call = tg.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                                    status_callback=receiver.url("/status"))
    assert call.status == "queued"
    msgs = failed_with(tg, receiver, call.sid, 20005)
    assert any("credits" in m for m in msgs), msgs


def test_makecall_429_is_retried_not_failed(twigate, receiver):
    twigate.sim_fail(429, count=1, endpoint="/makecall",
                     key=twigate.accounts["a"].kaphila_key)
    call = twigate.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                                         status_callback=receiver.url("/status"))
    cb = receiver.wait_for_requests("/status", call_sid=call.sid, timeout=15)[0]
    assert cb.params["CallStatus"] == "completed"


def test_failure_of_one_key_leaves_other_accounts_alone(twigate, receiver):
    twigate.sim_fail(500, count=1, endpoint="/makecall",
                     key=twigate.accounts["a"].kaphila_key)
    call = twigate.client("b").calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                                            status_callback=receiver.url("/status"))
    cb = receiver.wait_for_requests("/status", call_sid=call.sid, timeout=15)[0]
    assert cb.params["CallStatus"] == "completed"
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


@pytest.mark.parametrize("mode,code", [
    ("garbage", 20500),    # 200 with a body that is not JSON
    ("refused", 20500),    # 200 with success=false
    ("hang", 20503),       # no answer within kaphila.timeout_ms
])
def test_broken_kaphila_answers(make_twigate, fake_kaphila, receiver, mode, code):
    fake_kaphila.mode = mode
    url = f"http://127.0.0.1:{fake_kaphila.server_address[1]}"
    tg = make_twigate(overrides={"kaphila.url": url, "kaphila.timeout_ms": 300,
                                 "kaphila.orphan_wait_ms": 200,
                                 "kaphila.reconcile_interval_ms": 100})
    call = tg.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                                    status_callback=receiver.url("/status"))
    assert call.status == "queued"
    # A lost answer (mode "hang") may still have dialled: the call is kept
    # until the orphan wait and a GET /calls show nothing came of it.
    failed_with(tg, receiver, call.sid, code)
    # twigate really asked Kaphila, with the account's own key.
    dials = [s for s in fake_kaphila.seen if s[0] == "/makecall"]
    assert dials and dials[0][1] == "Bearer " + tg.accounts["a"].kaphila_key
    # and stays healthy
    assert tg.healthz().status_code == 200


def test_unreachable_kaphila_fails_the_call(make_twigate, receiver):
    from harness import free_port
    tg = make_twigate(overrides={"kaphila.url": f"http://127.0.0.1:{free_port()}"})
    call = tg.client().calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=HANGUP,
                                    status_callback=receiver.url("/status"))
    msgs = failed_with(tg, receiver, call.sid, 20503)
    assert any("unreachable" in m for m in msgs), msgs
