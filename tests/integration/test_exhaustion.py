"""Resource exhaustion on the REST listener (issue 16 §3; docs/security.md §3):
the per-client connection limit, the request-head deadline, the rate-limited
log lines about refusals, the bounded slow-header attack from one loopback
address while another keeps being served, `listen.address = ::` and HEAD on
the ops endpoints.

Every attacker here runs on loopback only (127.0.0.2 is loopback on Linux
without any setup) and is bounded in connections and time."""

import http.client
import resource
import socket
import threading
import time

import pytest
import requests

from harness import DEFAULT_FROM, SHORT_TWIML, fresh_number, wait_for

ATTACKER = "127.0.0.2"


def _raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        pytest.skip(f"needs {want} file descriptors, the limit is {soft}")


def _slow_conn(port, path="/healthz"):
    """A connection from ATTACKER that has sent a request line and one
    header, and never finishes its head."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(True)
    s.settimeout(5)
    s.bind((ATTACKER, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode())
    return s


def _closed_by_peer(s, timeout):
    """True when the peer closes (or resets) s within timeout."""
    s.settimeout(timeout)
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def _count_refused(tg):
    r = tg.http("GET", "/metrics", auth=None)
    for line in r.text.splitlines():
        if line.startswith("twigate_http_connections_refused_total"):
            return float(line.split()[-1])
    return 0.0


def test_head_deadline_is_not_restarted_by_trickling_bytes(make_twigate):
    """A client that sends one header byte every 100 ms (each restarting
    libmicrohttpd's idle timeout) is cut off at listen.head_timeout_ms, while
    a client that completes its head promptly is served normally."""
    tg = make_twigate(overrides={"listen.head_timeout_ms": 1000})
    s = _slow_conn(tg.port)
    t0 = time.monotonic()
    closed = False
    try:
        while time.monotonic() - t0 < 8:
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if _closed_by_peer(s, 0.1):
                closed = True
                break
    finally:
        s.close()
    elapsed = time.monotonic() - t0
    assert closed, "a trickling request head was never cut off"
    assert 0.9 <= elapsed < 5, f"cut off after {elapsed:.2f}s (deadline 1 s)"
    assert tg.healthz().status_code == 200
    wait_for(lambda: "request head was not complete in time" in tg.log_text(), 5,
             message="no log line about the late request head")


def test_per_client_limit_and_rate_limited_log(make_twigate):
    """listen.max_per_client: the 11th connection from one address is
    refused, another address is not, and 300 refusals make a handful of log
    lines, not 300."""
    tg = make_twigate(overrides={"listen.max_per_client": 10})
    held = [_slow_conn(tg.port) for _ in range(10)]
    try:
        # Each of these is accepted by the kernel, then closed by twigate.
        for i in range(300):
            s = _slow_conn(tg.port)
            closed = _closed_by_peer(s, 2)
            s.close()
            assert closed, f"connection {i + 11} from one address was not refused"
        # The held ten still count; 127.0.0.1 is another client.
        assert tg.healthz().status_code == 200
        assert _count_refused(tg) >= 300
        wait_for(lambda: "refused 300 connection(s) over listen.max_per_client" in tg.log_text(),
                 5, message="no summary line for the refusals")
        log = tg.log_text()
        per_conn = [l for l in log.splitlines() if "mhd" in l and ("WARN" in l or "warn" in l)]
        assert len(per_conn) <= 20, f"{len(per_conn)} MHD lines for 300 refusals"
    finally:
        for s in held:
            s.close()
    # Closing them frees the address's slots.
    wait_for(lambda: _fresh_ok(tg, ATTACKER), 5, message="slots were not given back")


def _fresh_ok(tg, source):
    try:
        c = http.client.HTTPConnection("127.0.0.1", tg.port, timeout=2,
                                       source_address=(source, 0))
        c.request("GET", "/healthz")
        ok = c.getresponse().status == 200
        c.close()
        return ok
    except OSError:
        return False


def test_limit_exempt_address_is_not_limited(make_twigate):
    tg = make_twigate(overrides={"listen.max_per_client": 5, "listen.limit_exempt": ATTACKER})
    held = [_slow_conn(tg.port) for _ in range(20)]
    try:
        assert _fresh_ok(tg, ATTACKER)
        assert _count_refused(tg) == 0
    finally:
        for s in held:
            s.close()


def test_slow_header_attack_from_one_address_does_not_starve_others(make_twigate):
    """The issue's attack, bounded: 2,600 slow-header connections from
    127.0.0.2 (over limits.max_connections = 2048, so without a per-client
    limit nobody else gets a connection) held for at most ~20 s, reopened as
    twigate drops them. Meanwhile a client on 127.0.0.1 does 200 call
    fetches, each on a new connection, with p99 < 50 ms (or, on a machine
    busy with other work, < 3 x the p99 of the same fetches measured just
    before without the attack), and a call placed then completes (the
    simulator's events keep being accepted)."""
    n_attack = 2600
    _raise_fd_limit(n_attack + 512)
    tg = make_twigate(overrides={"limits.max_connections": 2048})
    client = tg.client("a")
    done = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
    tg.wait_for_status(client, done.sid, "completed")
    acct = tg.accounts["a"]
    path = f"{tg.account_uri('a')}/Calls/{done.sid}.json"

    sess_auth = requests.auth.HTTPBasicAuth(acct.sid, acct.auth_token)

    def fetches(n=200):
        """n fetches, each on a new connection (a new client, not a kept-alive
        one): the sorted latencies."""
        lat = []
        for _ in range(n):
            t0 = time.monotonic()
            r = requests.get(tg.base_url + path, auth=sess_auth, timeout=5,
                             headers={"Connection": "close"})
            lat.append(time.monotonic() - t0)
            assert r.status_code == 200, r.text
        return sorted(lat)

    # The same fetches without the attack first: on a machine loaded by
    # other work a p99 over 50 ms is the machine's, and shows here too.
    base = fetches()
    stop = threading.Event()
    opened = [0]

    def attack():
        socks = []
        deadline = time.monotonic() + 20
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                while len(socks) < n_attack and not stop.is_set():
                    try:
                        socks.append(_slow_conn(tg.port))
                        opened[0] += 1
                    except OSError:
                        break
                # Trickle a byte on each (restarting any idle timeout); drop
                # and later reopen the ones twigate closed.
                alive = []
                for s in socks:
                    try:
                        s.send(b"X")
                        alive.append(s)
                    except OSError:
                        s.close()
                socks = alive
                stop.wait(0.5)
        finally:
            for s in socks:
                s.close()

    t = threading.Thread(target=attack, daemon=True)
    t.start()
    try:
        wait_for(lambda: opened[0] >= n_attack, 15, message="the attack never got going")
        lat = fetches()
        p99, base_p99 = lat[197], base[197]
        # Starved, a fetch waits for a slot for seconds (the attackers hold
        # theirs up to head_timeout_ms) or fails; 50 ms is the target on a
        # quiet machine, three times the same run's unattacked p99 on a busy one.
        assert p99 < max(0.050, 3 * base_p99), (
            f"p99 {p99 * 1000:.1f} ms under attack (median {lat[100] * 1000:.1f} ms); "
            f"without it p99 {base_p99 * 1000:.1f} ms (median {base[100] * 1000:.1f} ms)")
        assert lat[100] < max(0.010, 3 * base[100])
        call = client.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML)
        tg.wait_for_status(client, call.sid, "completed", timeout=15)
        assert _count_refused(tg) > 0
    finally:
        stop.set()
        t.join(30)


# ---- listen.address = :: and HEAD ----------------------------------------

def test_listen_on_all_ipv6_and_ipv4_interfaces(make_twigate):
    """listen.address = :: was refused ("not an IPv4 address") although the
    docs offer it; it binds dual-stack and answers on ::1 and 127.0.0.1."""
    tg = make_twigate(overrides={"listen.address": "::"})   # started through 127.0.0.1
    c = http.client.HTTPConnection("::1", tg.port, timeout=5)
    c.request("GET", "/healthz")
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"ok\n")
    c.close()
    a = tg.accounts["a"]
    r = requests.get(f"http://[::1]:{tg.port}{tg.account_uri('a')}.json",
                     auth=(a.sid, a.auth_token), timeout=5)
    assert r.status_code == 200 and r.json()["sid"] == a.sid


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_head_on_ops_endpoints_answers_like_get_without_body(twigate, path):
    wait_for(lambda: twigate.http("GET", "/readyz", auth=None).status_code == 200, 5)
    g = twigate.http("GET", path, auth=None)
    h = twigate.http("HEAD", path, auth=None)
    assert h.status_code == g.status_code == 200, (h.status_code, g.status_code)
    assert h.content == b""
    assert h.headers["Content-Type"] == g.headers["Content-Type"]
