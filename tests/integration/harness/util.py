"""Small helpers shared by the integration tests: polling, ports, numbers,
date and error-shape checks.  Nothing here talks to the daemon by itself."""

import email.utils
import os
import random
import re
import socket
import time
from datetime import datetime, timezone

RFC2822_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} \+0000$")

ERROR_KEYS = {"code", "message", "more_info", "status"}


_HANDED_OUT = set()
# Under pytest-xdist (make check runs the suites with -n), worker k of n
# hands out only ports with port % n == k: each worker's set above cannot
# see the others', and two workers probing the same free port before either
# daemon binds it would configure two daemons with one port.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0) % _WORKERS


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now, never the
    same twice in this test run, below Linux's ephemeral range (32768+).
    Asking the kernel for port 0 twice can return the same port once the
    first probe socket is closed (a twigate and its simulator were once
    configured with one port), and an ephemeral port can be taken by any
    outgoing connection before the daemon binds it."""
    while True:
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT or port % _WORKERS != _WORKER:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port


def wait_for(predicate, timeout=10.0, interval=0.02, message=None):
    """Polls predicate() until it returns something truthy and returns that.
    Raises AssertionError (with message, or the last exception) on timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except AssertionError as e:  # predicates may assert; keep polling
            last_exc = e
        if time.monotonic() >= deadline:
            detail = message or "condition not met"
            if last_exc is not None:
                detail += f" (last: {last_exc})"
            raise AssertionError(f"timed out after {timeout}s: {detail}")
        time.sleep(interval)


_used_numbers = set()


def fresh_number(suffix=None, area="415"):
    """A unique NANP E.164 number, +1<area><7 digits>.  Without suffix the last
    four digits are 1000-9999, so it never hits a simulator outcome (those are
    keyed on the endings 0001-0004); with suffix="0001" etc. it does."""
    while True:
        mid = random.randint(200, 999)
        last = suffix if suffix is not None else str(random.randint(1000, 9999))
        num = f"+1{area}{mid:03d}{last}"
        if num not in _used_numbers:
            _used_numbers.add(num)
            return num


def nanp_formatted(e164):
    """'+14155550123' -> '(415) 555-0123' (contract §2: to_formatted)."""
    assert re.fullmatch(r"\+1\d{10}", e164), e164
    d = e164[2:]
    return f"({d[0:3]}) {d[3:6]}-{d[6:10]}"


def assert_rfc2822(value, field="date"):
    assert isinstance(value, str), f"{field}: expected RFC 2822 string, got {value!r}"
    assert RFC2822_RE.match(value), f"{field}: not RFC 2822 with +0000: {value!r}"
    return parse_rfc2822(value)


def parse_rfc2822(value):
    dt = email.utils.parsedate_to_datetime(value)
    assert dt.tzinfo is not None and dt.utcoffset().total_seconds() == 0, value
    return dt


def utcnow():
    return datetime.now(timezone.utc)


def assert_twilio_error(resp, status, code=None, code_range=None):
    """Asserts a requests.Response is a Twilio error: HTTP `status`, JSON
    content type, body with exactly {code, message, more_info, status},
    body status == HTTP status, more_info naming the code.  Returns the body."""
    assert resp.status_code == status, (
        f"expected HTTP {status}, got {resp.status_code}: {resp.text[:500]}")
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.split(";")[0].strip().lower() == "application/json", (
        f"error content type {ctype!r}, body {resp.text[:300]!r}")
    body = resp.json()
    assert isinstance(body, dict), body
    assert set(body) == ERROR_KEYS, f"error body keys {sorted(body)} != {sorted(ERROR_KEYS)}"
    assert isinstance(body["code"], int) and not isinstance(body["code"], bool), body
    assert body["status"] == status, body
    assert isinstance(body["message"], str) and body["message"].strip(), body
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}", body
    if code is not None:
        assert body["code"] == code, f"expected code {code}, got {body}"
    if code_range is not None:
        lo, hi = code_range
        assert lo <= body["code"] <= hi, f"code {body['code']} not in {lo}..{hi}: {body}"
    return body


# ------------------------------------------------------------ Twilio shapes

CALL_KEYS = {
    "sid", "date_created", "date_updated", "parent_call_sid", "account_sid", "to",
    "to_formatted", "from", "from_formatted", "phone_number_sid", "status",
    "start_time", "end_time", "duration", "price", "price_unit", "direction",
    "answered_by", "api_version", "forwarded_from", "group_sid", "caller_name",
    "queue_time", "trunk_sid", "uri", "subresource_uris"}
CALL_OPTIONAL_KEYS = {"annotation"}        # legacy; contract §2 allows it

CALL_SUBRESOURCES = {
    "notifications": "Notifications", "recordings": "Recordings",
    "payments": "Payments", "events": "Events", "siprec": "Siprec",
    "streams": "Streams", "transcriptions": "Transcriptions",
    "user_defined_message_subscriptions": "UserDefinedMessageSubscriptions",
    "user_defined_messages": "UserDefinedMessages"}

CALL_STATUSES = {"queued", "ringing", "in-progress", "completed", "busy", "failed",
                 "no-answer", "canceled"}

LIST_META_KEYS = {"end", "first_page_uri", "next_page_uri", "page", "page_size",
                  "previous_page_uri", "start", "uri"}

SID_RE = {p: re.compile(rf"^{p}[0-9a-fA-F]{{32}}$") for p in ("AC", "CA", "SK", "NO", "PN")}


def assert_call_json(body, account_sid, to=None, from_=None):
    """Shape checks of contract §2 that hold for every Call JSON."""
    keys = set(body)
    missing = CALL_KEYS - keys
    extra = keys - CALL_KEYS - CALL_OPTIONAL_KEYS
    assert not missing, f"Call JSON lacks {sorted(missing)}"
    assert not extra, f"Call JSON has unexpected keys {sorted(extra)}"
    sid = body["sid"]
    assert SID_RE["CA"].match(sid), sid
    assert body["account_sid"] == account_sid
    if to is not None:
        assert body["to"] == to
        assert body["to_formatted"] == nanp_formatted(to)
    if from_ is not None:
        assert body["from"] == from_
        assert body["from_formatted"] == nanp_formatted(from_)
    assert body["status"] in CALL_STATUSES, body["status"]
    assert body["api_version"] == "2010-04-01"
    assert body["price_unit"] == "USD"
    assert isinstance(body["queue_time"], str) and body["queue_time"].isdigit(), body["queue_time"]
    for f in ("date_created", "date_updated"):
        assert_rfc2822(body[f], f)
    for f in ("start_time", "end_time"):
        if body[f] is not None:
            assert_rfc2822(body[f], f)
    if body["duration"] is not None:
        assert isinstance(body["duration"], str) and body["duration"].isdigit(), body["duration"]
    base = f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}"
    assert body["uri"] == base + ".json"
    subs = body["subresource_uris"]
    assert set(subs) == set(CALL_SUBRESOURCES), sorted(subs)
    for key, name in CALL_SUBRESOURCES.items():
        assert subs[key] == f"{base}/{name}.json", (key, subs[key])


def assert_list_envelope(body, record_key):
    """Exactly the 8 meta keys plus the one record array (contract §5.1)."""
    assert set(body) == LIST_META_KEYS | {record_key}, (
        f"list keys {sorted(body)} != {sorted(LIST_META_KEYS | {record_key})}")
    assert isinstance(body[record_key], list)
    for k in ("start", "end", "page", "page_size"):
        assert isinstance(body[k], int) and not isinstance(body[k], bool), (k, body[k])
    for k in ("uri", "first_page_uri"):
        assert isinstance(body[k], str) and body[k].startswith("/2010-04-01/"), (k, body[k])
    for k in ("next_page_uri", "previous_page_uri"):
        assert body[k] is None or (isinstance(body[k], str)
                                   and body[k].startswith("/2010-04-01/")), (k, body[k])
