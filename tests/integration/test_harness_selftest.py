"""Self-tests of the harness; they need no daemon.

They prove the OpenAPI validator accepts the spec's own examples and rejects
mutated ones, that the webhook receiver really validates signatures (and
rejects forged ones), that its per-path behaviours work, and that the config
writer and the SDK client plumbing do what the other tests rely on."""

import copy
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from harness import (Twigate, WebhookReceiver, assert_matches_schema,
                     assert_twilio_error, find_operation, free_port, fresh_number,
                     make_accounts, nanp_formatted, render_config, response_examples,
                     response_schema, schema_errors, wait_for)
from harness.util import RFC2822_RE

ACC = "/2010-04-01/Accounts/{AccountSid}"
CALLS = ACC + "/Calls.json"
CALL = ACC + "/Calls/{Sid}.json"
ACCOUNT = "/2010-04-01/Accounts/{Sid}.json"
EVENTS = ACC + "/Calls/{CallSid}/Events.json"
CALL_NOTIFS = ACC + "/Calls/{CallSid}/Notifications.json"
ACC_NOTIFS = ACC + "/Notifications.json"

OPERATIONS = [
    (CALLS, "post", 201),          # CreateCall
    (CALL, "get", 200),            # FetchCall
    (CALL, "post", 200),           # UpdateCall
    (CALLS, "get", 200),           # ListCall
    (ACCOUNT, "get", 200),         # FetchAccount
    (EVENTS, "get", 200),          # ListCallEvent
    (CALL_NOTIFS, "get", 200),     # ListCallNotification
    (ACC_NOTIFS, "get", 200),      # ListNotification
]


def _session():
    s = requests.Session()
    s.trust_env = False
    return s


# ------------------------------------------------------------ OpenAPI helper

@pytest.mark.parametrize("path,method,status", OPERATIONS)
def test_spec_examples_validate(path, method, status):
    examples = response_examples(path, method, status)
    assert examples, f"the spec has no examples for {method} {path} {status}"
    for name, value in examples.items():
        errors = schema_errors(path, method, status, value)
        assert not errors, f"example {name}: {[e.message for e in errors]}"


def _create_example():
    return copy.deepcopy(response_examples(CALLS, "post", 201)["create"])


@pytest.mark.parametrize("field,value", [
    ("duration", 15),                    # must be a string
    ("status", "ringingg"),              # not in call_enum_status
    ("status", None),                    # status is not nullable
    ("sid", "CA123"),                    # pattern/length
    ("account_sid", "XX" + "a" * 32),    # pattern
    ("queue_time", 1000),                # string
    ("subresource_uris", "nope"),        # object
    ("price", -0.03),                    # string
])
def test_mutated_call_is_rejected(field, value):
    body = _create_example()
    body[field] = value
    with pytest.raises(AssertionError, match=field):
        assert_matches_schema(CALLS, "post", 201, body)


def test_nullable_fields_accept_null():
    body = _create_example()
    for f in ("duration", "price", "start_time", "end_time", "answered_by",
              "parent_call_sid", "phone_number_sid", "forwarded_from"):
        body[f] = None
    assert_matches_schema(CALLS, "post", 201, body)
    schema = response_schema(CALLS, "post", 201)
    assert schema["properties"]["duration"]["type"] == ["string", "null"]
    assert "$ref" not in json.dumps(schema)


def test_mutated_list_is_rejected():
    page = copy.deepcopy(response_examples(CALLS, "get", 200)["readFullPage1"])
    assert_matches_schema(CALLS, "get", 200, page)
    for field, value in (("end", "1"), ("end", None), ("page_size", 2.5),
                         ("calls", {"not": "a list"}), ("start", None)):
        bad = copy.deepcopy(page)
        bad[field] = value
        assert schema_errors(CALLS, "get", 200, bad), f"{field}={value!r} accepted"
    bad = copy.deepcopy(page)
    bad["calls"][0]["direction"] = 7
    assert schema_errors(CALLS, "get", 200, bad)
    assert not schema_errors(CALLS, "get", 200, dict(page, next_page_uri=None))


def test_mutated_account_is_rejected():
    acct = copy.deepcopy(response_examples(ACCOUNT, "get", 200)["fetch"])
    assert_matches_schema(ACCOUNT, "get", 200, acct)
    for field, value in (("type", "Bogus"), ("status", "sleeping"), ("sid", "AC1"),
                         ("subresource_uris", [])):
        bad = dict(acct, **{field: value})
        assert schema_errors(ACCOUNT, "get", 200, bad), f"{field}={value!r} accepted"


def test_mutated_notification_and_event_lists_are_rejected():
    notifs = copy.deepcopy(response_examples(CALL_NOTIFS, "get", 200)["readFull"])
    notifs["notifications"][0]["error_code"] = 11200      # must be a string
    assert schema_errors(CALL_NOTIFS, "get", 200, notifs)
    notifs = copy.deepcopy(response_examples(CALL_NOTIFS, "get", 200)["readFull"])
    notifs["notifications"][0]["request_method"] = "PATCH"  # enum GET/POST
    assert schema_errors(CALL_NOTIFS, "get", 200, notifs)
    events = copy.deepcopy(response_examples(EVENTS, "get", 200)["readFull"])
    events["events"] = "none"
    assert schema_errors(EVENTS, "get", 200, events)


def test_strict_mode_rejects_unknown_keys():
    body = _create_example()
    body["surprise"] = 1
    assert_matches_schema(CALLS, "post", 201, body)             # lenient by default
    with pytest.raises(AssertionError, match="surprise"):
        assert_matches_schema(CALLS, "post", 201, body, strict=True)


def test_find_operation_by_concrete_path():
    ac, ca = "AC" + "0" * 32, "CA" + "1" * 32
    assert find_operation(f"/2010-04-01/Accounts/{ac}/Calls/{ca}.json", "GET")[0] == CALL
    assert find_operation(f"/2010-04-01/Accounts/{ac}/Calls.json?PageSize=3", "get")[0] == CALLS
    assert find_operation(f"/2010-04-01/Accounts/{ac}.json", "GET")[0] == ACCOUNT
    assert find_operation(f"/2010-04-01/Accounts/{ac}/Calls/{ca}/Events.json", "GET")[0] == EVENTS
    with pytest.raises(KeyError):
        find_operation(f"/2010-04-01/Accounts/{ac}/Calls.json", "delete")
    assert response_schema(CALL, "delete", 204) is None


# ------------------------------------------------------------ webhook receiver

@pytest.fixture
def rx():
    accounts = make_accounts()
    r = WebhookReceiver({a.sid: a.auth_token for a in accounts.values()})
    r.test_accounts = accounts
    yield r
    r.close()


def _sign(token, url, params):
    return RequestValidator(token).compute_signature(url, params)


def test_receiver_validates_post_signature(rx):
    a = rx.test_accounts["a"]
    url = rx.url("/status?x=1")
    params = {"CallSid": "CA" + "2" * 32, "AccountSid": a.sid, "CallStatus": "ringing",
              "FromCity": "", "Caller": "+14155550100"}
    sig = _sign(a.auth_token, url, params)
    r = _session().post(url, data=params, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 200 and r.text == "<Response/>"
    got = rx.requests("/status")[0]
    assert got.valid and got.signed_by == a.sid
    assert got.params["FromCity"] == ""            # blank values are kept
    assert got.params["Caller"] == "+14155550100"  # '+' survives form decoding
    assert got.url == url and got.route == "/status"
    rx.assert_all_valid()


def test_receiver_validates_get_signature_over_query(rx):
    a = rx.test_accounts["a"]
    url = rx.url("/cb?CallSid=CA" + "3" * 32 + "&AccountSid=" + a.sid + "&CallStatus=completed")
    sig = _sign(a.auth_token, url, {})
    _session().get(url, headers={"X-Twilio-Signature": sig})
    got = rx.requests("/cb")[0]
    assert got.method == "GET" and got.valid
    assert got.params["CallStatus"] == "completed"


def test_receiver_rejects_forgeries(rx):
    a, b = rx.test_accounts["a"], rx.test_accounts["b"]
    url = rx.url("/status")
    params = {"AccountSid": a.sid, "CallStatus": "completed"}
    s = _session()
    # signed with the other account's token
    s.post(url, data=params, headers={"X-Twilio-Signature": _sign(b.auth_token, url, params)})
    # parameters changed after signing
    s.post(url, data=dict(params, CallStatus="busy"),
           headers={"X-Twilio-Signature": _sign(a.auth_token, url, params)})
    # signed over a URL with the fragment left in
    s.post(url, data=params,
           headers={"X-Twilio-Signature": _sign(a.auth_token, url + "#rc=3", params)})
    # no signature at all
    s.post(url, data=params)
    got = rx.requests("/status")
    assert len(got) == 4 and not any(r.valid for r in got)
    with pytest.raises(AssertionError, match="X-Twilio-Signature"):
        rx.assert_all_valid()


def test_receiver_records_duplicate_keys(rx):
    _session().post(rx.url("/dup"), data=[("A", "1"), ("A", "2"), ("B", "3")])
    got = rx.requests("/dup")[0]
    assert got.duplicate_keys == ["A"] and got.form["A"] == ["1", "2"]


def test_receiver_behaviours(rx):
    s = _session()
    rx.set("/twiml", lambda req: f"<Response><Say>{req.params['n']}</Say></Response>")
    assert s.post(rx.url("/twiml"), data={"n": "7"}).text == "<Response><Say>7</Say></Response>"

    rx.set("/flaky", fail_times=2, fail_with=503)
    codes = [s.post(rx.url("/flaky"), data={}).status_code for _ in range(3)]
    assert codes == [503, 503, 200]

    rx.set("/plain", "hello", content_type="text/plain", status=201)
    r = s.get(rx.url("/plain"))
    assert (r.status_code, r.headers["Content-Type"], r.text) == (201, "text/plain", "hello")

    rx.set("/slow", delay=0.4)
    t0 = time.monotonic()
    s.get(rx.url("/slow"))
    assert time.monotonic() - t0 >= 0.35

    rx.set("/slow", delay=2)
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(rx.url("/slow"), timeout=0.3)
    assert len(rx.requests("/slow")) == 2     # recorded on arrival, not on answer

    rx.set("/close", close=True)
    with pytest.raises(requests.exceptions.ConnectionError):
        s.post(rx.url("/close"), data={"x": "1"})
    assert rx.requests("/close")[0].params == {"x": "1"}

    rx.set("/closetwice", fail_times=1, fail_with="close")
    with pytest.raises(requests.exceptions.ConnectionError):
        _session().get(rx.url("/closetwice"))
    assert _session().get(rx.url("/closetwice")).status_code == 200


def test_wait_for_requests_times_out_with_detail(rx):
    with pytest.raises(AssertionError, match="expected >= 1"):
        rx.wait_for_requests("/never", timeout=0.2)


# ------------------------------------------------------------ small helpers

def test_assert_twilio_error(rx):
    good = {"code": 21211, "message": "The 'To' number x is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
    rx.set("/err", json.dumps(good), content_type="application/json", status=400)
    assert assert_twilio_error(_session().get(rx.url("/err")), 400, 21211) == good
    for bad in (dict(good, extra=1), dict(good, status=404),
                dict(good, more_info="https://x"), {"message": "x"}):
        rx.set("/err", json.dumps(bad))
        with pytest.raises(AssertionError):
            assert_twilio_error(_session().get(rx.url("/err")), 400, 21211)
    rx.set("/err", json.dumps(good), content_type="text/html")
    with pytest.raises(AssertionError, match="content type"):
        assert_twilio_error(_session().get(rx.url("/err")), 400)


def test_free_port_and_wait_for():
    p = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))           # really free
    calls = []
    assert wait_for(lambda: calls.append(1) or len(calls) >= 3, timeout=2) is True
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: False, timeout=0.1, message="never")


@pytest.mark.parametrize("worker", ["gw0", "gw2"])
def test_free_port_keeps_to_its_xdist_workers_share(worker):
    """Under make check's -n 3, worker k hands out only ports that are k
    modulo 3, so no two workers can give one port to two daemons."""
    env = dict(os.environ, PYTEST_XDIST_WORKER=worker, PYTEST_XDIST_WORKER_COUNT="3")
    r = subprocess.run([sys.executable, "-c", "from harness.util import free_port;"
                        "print(*[free_port() for _ in range(40)])"],
                       cwd=os.path.dirname(os.path.abspath(__file__)), env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    ports = [int(p) for p in r.stdout.split()]
    assert len(set(ports)) == 40 and {p % 3 for p in ports} == {int(worker[2:])}, ports


def test_numbers():
    n = fresh_number()
    assert n.startswith("+1415") and len(n) == 12 and n[-4:] >= "1000"
    assert fresh_number() != n
    assert fresh_number("0001").endswith("0001")
    assert nanp_formatted("+14158675309") == "(415) 867-5309"
    assert RFC2822_RE.match("Wed, 08 Oct 2025 13:54:12 +0000")
    assert not RFC2822_RE.match("Wed, 8 Oct 2025 13:54:12 GMT")


def test_render_config():
    text = render_config({"public_url": "http://x", "listen.port": 1, "sim.fast": True,
                          "account.a.sid": "ACx", "account.a.auth_token": "t",
                          "kaphila.url": "sim", "skip": None})
    lines = text.splitlines()
    assert lines.index("public_url = http://x") < lines.index("[listen]")
    assert "[sim]" in lines and "fast = true" in lines
    i = lines.index("[account.a]")
    assert lines[i + 1:i + 3] == ["sid = ACx", "auth_token = t"]
    assert "skip" not in text


def test_client_plumbing_against_a_canned_page(rx, tmp_path):
    """Twigate.client() must send the SDK's requests to base_url with Basic
    auth; checked against the receiver serving the spec's empty list."""
    accounts = rx.test_accounts
    tg = Twigate(tmp_path, accounts)               # not started: config only
    conf = open(tg.config_path).read()
    assert f"sid = {accounts['a'].sid}" in conf and f"port = {tg.port}" in conf
    assert "url = sim" in conf and "fast = true" in conf
    tg.base_url = rx.base_url
    page = copy.deepcopy(response_examples(CALLS, "get", 200)["readEmptyDatesGreater"])
    path = f"/2010-04-01/Accounts/{accounts['a'].sid}/Calls.json"
    rx.set(path, json.dumps(page), content_type="application/json")
    assert tg.client("a").calls.list(page_size=2) == []
    req = rx.requests(path)[0]
    assert req.query["PageSize"] == ["2"]
    assert req.header("Authorization", "").startswith("Basic ")
    rx.set(path.replace("Calls.json", "Calls/CA" + "4" * 32 + ".json"), json.dumps({"code": 20003, "message": "Authenticate", "status": 401,
                             "more_info": "https://www.twilio.com/docs/errors/20003"}),
           status=401)
    with pytest.raises(TwilioRestException) as ei:
        tg.client("a", api_key=True).calls("CA" + "4" * 32).fetch()
    assert ei.value.status == 401 and ei.value.code == 20003
    import base64
    auth = rx.requests()[-1].header("Authorization")
    user = base64.b64decode(auth.split()[1]).decode().split(":")[0]
    assert user == accounts["a"].api_key_sid


# ------------------------------------------------------------ no deciding sleeps

# Every sleep call in tests/integration, by (file, enclosing function):
# (how many, why it may stay).  A sleep that waits for something must be a
# wait_for on the observable instead, and a "did not happen" check must wait
# for a barrier (harness/barriers.py); only sleeps that make time pass for
# its own sake - a recording's length, a load's pace, a polling interval, a
# deliberately slow customer server - belong here.  Load can only make them
# longer, and no assertion depends on them being short.
_MEDIA = "the recording's length (time is the content), not a wait for an event"
SLEEP_ALLOWED = {
    ("harness/util.py", "wait_for"): (1, "the polling interval of wait_for itself"),
    ("harness/daemon.py", "_Process._wait_ready"): (1, "the polling interval while /healthz comes up"),
    ("harness/receiver.py", "WebhookReceiver._respond"): (
        1, "Behaviour(delay=): a slow customer server is the thing under test"),
    ("test_ops_lifecycle.py", "_load"): (1, "pacing: the request rate of the load generator"),
    ("test_ops_lifecycle.py",
     "test_sigterm_during_load_drains_cleanly_and_restart_loses_nothing"): (
        1, "pacing: more load in flight when SIGTERM comes (outcomes are judged per request)"),
    ("test_ported.py", "recorded_call"): (1, _MEDIA),
    ("test_ported.py", "test_record_true_completed_callback_carries_the_recording"): (1, _MEDIA),
    ("test_recordings.py", "test_record_true_end_to_end"): (1, _MEDIA),
    ("test_recordings.py", "test_record_true_default_events_and_get_method"): (1, _MEDIA),
    ("test_recordings.py", "finished"): (1, _MEDIA),
    ("test_recordings.py", "test_concurrent_first_requests_download_once.fetch"): (
        1, "pacing: a client honouring 503 Retry-After while the MP3 is encoded"),
    ("test_recordings.py", "test_sdk_list_fetch_paging_delete"): (1, _MEDIA),
    ("test_recordings.py", "test_start_recording_window"): (
        3, "audio before, in and after the window; the window's length is asserted "
           "against the measured time, not the sleep"),
    ("test_recordings.py", "test_stop_record_true_recording"): (1, _MEDIA),
    ("test_recordings.py", "test_window_open_at_hangup_ends_with_the_call"): (1, _MEDIA),
    ("test_recordings.py", "test_record_verb_window"): (1, "call audio after the window"),
    ("test_recordings.py", "test_transient_download_failure_is_retried"): (1, _MEDIA),
    ("test_recordings.py", "test_restart_finishes_waiting_recordings"): (1, _MEDIA),
    ("test_twiml.py", "test_record_finish_on_key"): (1, _MEDIA),
    ("test_twiml.py", "test_record_status_callback"): (1, _MEDIA),
    ("test_twiml.py", "test_record_caller_hangs_up"): (1, _MEDIA),
}


def _sleep_calls(root):
    """{(file relative to root, dotted enclosing function): [line, ...]} of
    every call to something named sleep (time.sleep, asyncio.sleep, a bare
    sleep imported from time) in the Python files under root."""
    import ast
    import pathlib
    found = {}
    for path in sorted(pathlib.Path(root).rglob("*.py")):
        rel = path.relative_to(root).as_posix()

        def walk(node, stack):
            for ch in ast.iter_child_nodes(node):
                inner = stack
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = stack + [ch.name]
                if isinstance(ch, ast.Call):
                    fn = ch.func
                    if ((isinstance(fn, ast.Attribute) and fn.attr == "sleep")
                            or (isinstance(fn, ast.Name) and fn.id == "sleep")):
                        found.setdefault((rel, ".".join(stack)), []).append(ch.lineno)
                walk(ch, inner)
        walk(ast.parse(path.read_text(), str(path)), [])
    return found


def test_no_sleep_decides_an_outcome():
    """The integration suite waits for events, never for time: every sleep
    call is on the allow-list above, with its reason and exact count."""
    import pathlib
    root = pathlib.Path(__file__).resolve().parent
    found = _sleep_calls(root)
    unexpected = {k: v for k, v in found.items()
                  if k not in SLEEP_ALLOWED or len(v) > SLEEP_ALLOWED[k][0]}
    assert not unexpected, (
        "fixed sleeps outside the allow-list (use wait_for on the observable, or a "
        f"barrier from harness/barriers.py for a 'did not happen'): {unexpected}")
    stale = {k: (n, len(found.get(k, []))) for k, (n, _) in SLEEP_ALLOWED.items()
             if len(found.get(k, [])) != n}
    assert not stale, f"allow-list entries that no longer match the code: {stale}"
    assert all(reason.strip() for _, reason in SLEEP_ALLOWED.values())


def test_sleep_guard_sees_every_form(tmp_path):
    """The scan finds time.sleep, a bare sleep and asyncio.sleep, inside
    nested functions and methods, and names where they are."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "test_a.py").write_text(
        "import time\nfrom time import sleep\n"
        "def test_x():\n    time.sleep(1)\n    def inner():\n        sleep(0.1)\n")
    (tmp_path / "sub" / "b.py").write_text(
        "import asyncio\nclass K:\n    async def m(self):\n        await asyncio.sleep(2)\n")
    assert _sleep_calls(tmp_path) == {("test_a.py", "test_x"): [4],
                                      ("test_a.py", "test_x.inner"): [6],
                                      ("sub/b.py", "K.m"): [4]}
