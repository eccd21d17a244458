"""Operations (issue 7, docs/operations.md): health and readiness, Prometheus
metrics (scraped and parsed strictly), logs (no secret ever, JSON lines with
context), SIGTERM drain under load and restart without loss, SIGHUP reload,
make install and the man page, the command line, and the container/systemd
packaging checks of scripts/check-docker.sh.

Every test starts the daemons it needs (make_twigate), so exact metric deltas
and log contents belong to that test alone.

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
import math
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from harness import (DEFAULT_FROM, LIVE_TWIML, SHORT_TWIML, KaphilaSim,
                     assert_twilio_error, build_dir, free_port, fresh_number,
                     make_accounts, render_config, wait_for)
from harness.oas import REPO_ROOT

ALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
TERMINAL = {"completed", "busy", "failed", "no-answer", "canceled"}
SID_RE = {p: re.compile(rf"{p}[0-9a-f]{{32}}") for p in ("AC", "CA", "SK")}


def _session():
    s = requests.Session()
    s.trust_env = False
    return s


def _binary(name):
    return os.path.join(build_dir(), name)


def _child_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIGATE_")}
    env.update(extra)
    return env


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


def _wait_log(tg, pattern, start=0, timeout=8):
    """Waits for a log line matching pattern after byte offset start."""
    rx = re.compile(pattern)
    try:
        return wait_for(lambda: rx.search(tg.log_text()[start:]), timeout)
    except AssertionError:
        raise AssertionError(f"no log line matching {pattern!r}; log tail:\n{tg.log_tail(30)}")


def _db_rows(db_path, sql, args=()):
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


# ====================================================================
# A strict parser of the Prometheus text exposition format (0.0.4)
# ====================================================================

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_VALUE_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN")
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ExpositionError(AssertionError):
    pass


def _parse_float(text, where):
    if not _VALUE_RE.fullmatch(text):
        raise ExpositionError(f"{where}: {text!r} is not a sample value")
    return float(text.replace("Inf", "inf"))


def _parse_labels(s, i, where):
    """s[i] == '{'; returns (labels dict, index after '}')."""
    labels = {}
    i += 1
    while True:
        if s.startswith("}", i):
            return labels, i + 1
        m = re.compile(_LABEL).match(s, i)
        if not m:
            raise ExpositionError(f"{where}: bad label name at column {i}: {s!r}")
        name = m.group(0)
        i = m.end()
        if not s.startswith('="', i):
            raise ExpositionError(f"{where}: expected =\" after label {name}: {s!r}")
        i += 2
        value = []
        while True:
            if i >= len(s):
                raise ExpositionError(f"{where}: unterminated label value: {s!r}")
            c = s[i]
            if c == "\\":
                esc = s[i + 1:i + 2]
                if esc not in ("\\", '"', "n"):
                    raise ExpositionError(f"{where}: bad escape \\{esc} in label value: {s!r}")
                value.append("\n" if esc == "n" else esc)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ExpositionError(f"{where}: raw newline in a label value")
            else:
                value.append(c)
                i += 1
        if name in labels:
            raise ExpositionError(f"{where}: label {name} repeated: {s!r}")
        labels[name] = "".join(value)
        if s.startswith(",", i):
            i += 1
        elif not s.startswith("}", i):
            raise ExpositionError(f"{where}: expected , or }} after label {name}: {s!r}")


class Exposition:
    """families: name -> {"type", "help", "samples": [(sample name, labels, value)]}."""

    def __init__(self, text):
        self.text = text
        self.families = {}
        self.series = {}       # (sample name, frozenset(labels)) -> value
        self._parse()
        self._check_histograms()

    # ---------------------------------------------------------- parsing
    def _family_of(self, sample):
        if sample in self.families:
            return sample
        for suffix in ("_bucket", "_sum", "_count"):
            base = sample[:-len(suffix)]
            if sample.endswith(suffix) and self.families.get(base, {}).get("type") in (
                    "histogram", "summary"):
                if suffix == "_bucket" and self.families[base]["type"] != "histogram":
                    continue
                return base
        return None

    def _parse(self):
        text = self.text
        if not text.endswith("\n"):
            raise ExpositionError("the exposition does not end with a newline")
        closed = set()         # families whose group of lines has ended
        current = None
        for n, line in enumerate(text[:-1].split("\n"), 1):
            where = f"line {n}"
            if line.strip() == "":
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 2 and parts[1] in ("HELP", "TYPE"):
                    if len(parts) < 4 or not re.fullmatch(_NAME, parts[2]):
                        raise ExpositionError(f"{where}: malformed {parts[1]} line {line!r}")
                    name, rest = parts[2], parts[3]
                    if name in closed or (current is not None and current != name
                                          and name in self.families
                                          and self.families[name]["samples"]):
                        raise ExpositionError(f"{where}: {parts[1]} for {name} after its samples")
                    fam = self.families.setdefault(name, {"type": None, "help": None,
                                                          "samples": []})
                    if fam["samples"]:
                        raise ExpositionError(f"{where}: {parts[1]} for {name} after its samples")
                    if parts[1] == "HELP":
                        if fam["help"] is not None:
                            raise ExpositionError(f"{where}: second HELP for {name}")
                        if re.search(r"\\[^\\n]", rest.replace("\\\\", "")):
                            raise ExpositionError(f"{where}: bad escape in HELP text {rest!r}")
                        fam["help"] = rest
                    else:
                        if fam["type"] is not None:
                            raise ExpositionError(f"{where}: second TYPE for {name}")
                        if rest not in _TYPES:
                            raise ExpositionError(f"{where}: unknown type {rest!r}")
                        fam["type"] = rest
                    if current is not None and current != name:
                        closed.add(current)
                    current = name
                continue                 # any other comment is allowed
            m = re.compile(_NAME).match(line)
            if not m:
                raise ExpositionError(f"{where}: no metric name: {line!r}")
            sample = m.group(0)
            i = m.end()
            labels = {}
            if line.startswith("{", i):
                labels, i = _parse_labels(line, i, where)
            rest = line[i:]
            if not rest.startswith(" "):
                raise ExpositionError(f"{where}: expected a space before the value: {line!r}")
            fields = rest.split()
            if len(fields) not in (1, 2):
                raise ExpositionError(f"{where}: expected value [timestamp]: {line!r}")
            value = _parse_float(fields[0], where)
            if len(fields) == 2 and not re.fullmatch(r"-?\d+", fields[1]):
                raise ExpositionError(f"{where}: bad timestamp {fields[1]!r}")
            fam_name = self._family_of(sample)
            if fam_name is None:
                raise ExpositionError(f"{where}: sample {sample} has no TYPE line before it")
            if fam_name in closed:
                raise ExpositionError(f"{where}: {fam_name} lines are not one group "
                                      f"(sample {sample} after another family)")
            if current is not None and current != fam_name:
                closed.add(current)
            current = fam_name
            key = (sample, frozenset(labels.items()))
            if key in self.series:
                raise ExpositionError(f"{where}: duplicate series {sample}{labels}")
            self.series[key] = value
            self.families[fam_name]["samples"].append((sample, labels, value))
        for name, fam in self.families.items():
            if fam["type"] is None:
                raise ExpositionError(f"{name} has HELP but no TYPE")

    def _check_histograms(self):
        for name, fam in self.families.items():
            t = fam["type"]
            for sample, labels, value in fam["samples"]:
                if t in ("histogram", "summary") and sample == name:
                    raise ExpositionError(f"{name}: a {t} has only _bucket/_sum/_count samples")
                if t == "counter" and (math.isnan(value) or value < 0):
                    raise ExpositionError(f"counter {sample}{labels} = {value}")
                if t != "histogram" and "le" in labels:
                    raise ExpositionError(f"{sample}: 'le' label outside a histogram")
            if t != "histogram":
                continue
            groups = {}
            for sample, labels, value in fam["samples"]:
                rest = frozenset((k, v) for k, v in labels.items() if k != "le")
                g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
                if sample == name + "_bucket":
                    if "le" not in labels:
                        raise ExpositionError(f"{name}_bucket{labels} without le")
                    g["buckets"].append((_parse_float(labels["le"], f"{name} le"), value))
                elif "le" in labels:
                    raise ExpositionError(f"{sample}{labels}: le on _sum/_count")
                elif sample == name + "_sum":
                    g["sum"] = value
                else:
                    g["count"] = value
            for rest, g in groups.items():
                where = f"{name}{dict(rest)}"
                les = [le for le, _ in g["buckets"]]
                if not les or les[-1] != math.inf:
                    raise ExpositionError(f"{where}: no le=\"+Inf\" bucket last")
                if any(b <= a for a, b in zip(les, les[1:])):
                    raise ExpositionError(f"{where}: le bounds not strictly increasing: {les}")
                counts = [c for _, c in g["buckets"]]
                if any(c != int(c) or c < 0 for c in counts):
                    raise ExpositionError(f"{where}: bucket counts not whole numbers: {counts}")
                if any(b < a for a, b in zip(counts, counts[1:])):
                    raise ExpositionError(f"{where}: buckets not cumulative: {counts}")
                if g["count"] is None or g["sum"] is None:
                    raise ExpositionError(f"{where}: _sum or _count missing")
                if g["count"] != counts[-1]:
                    raise ExpositionError(f"{where}: _count {g['count']} != +Inf bucket {counts[-1]}")
                if math.isnan(g["sum"]):
                    raise ExpositionError(f"{where}: _sum is NaN")

    # ---------------------------------------------------------- queries
    def value(self, sample, default=None, **labels):
        return self.series.get((sample, frozenset(labels.items())), default)

    def samples(self, sample):
        """[(labels, value)] of one sample name."""
        return [(dict(k[1]), v) for k, v in self.series.items() if k[0] == sample]

    def total(self, sample, **match):
        """Sum over the series of sample whose labels include match."""
        return sum(v for labels, v in self.samples(sample)
                   if all(labels.get(k) == w for k, w in match.items()))

    def monotonic_series(self):
        """Keys of every series that may only grow: counters and histogram parts."""
        out = []
        for name, fam in self.families.items():
            if fam["type"] in ("counter", "histogram"):
                out += [(s, frozenset(l.items())) for s, l, _ in fam["samples"]]
        return out


def test_exposition_parser_rejects_malformed_text():
    """The parser used below is strict: each of these is refused."""
    good = ("# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n"
            "# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
            "h_seconds_bucket{le=\"0.1\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n"
            "h_seconds_sum 0.3\nh_seconds_count 2\n")
    Exposition(good)
    bad = [
        good[:-1],                                                    # no final newline
        good.replace('a_total{x="1"} 2', 'a_total{x="1",x="2"} 2'),    # repeated label
        good.replace('a_total{x="1"} 2', 'a_total{x=1} 2'),            # unquoted value
        good.replace('a_total{x="1"} 2', 'a_total{x="\\q"} 2'),        # bad escape
        good.replace('a_total{x="1"} 2', 'a_total{x="1"} two'),        # bad value
        good.replace('a_total{x="1"} 2', 'a_total{x="1"} -1'),         # negative counter
        good.replace('a_total{x="1"} 2\n', 'a_total{x="1"} 2\na_total{x="1"} 3\n'),  # twice
        good + 'a_total{x="2"} 2\n',                                  # family split in two
        good.replace("# TYPE a_total counter\n", ""),                  # no TYPE
        good.replace("h_seconds_bucket{le=\"+Inf\"} 2\n", ""),         # no +Inf bucket
        good.replace('h_seconds_bucket{le="0.1"} 1', 'h_seconds_bucket{le="0.1"} 3'),
        good.replace("h_seconds_count 2", "h_seconds_count 3"),        # count != +Inf
        good.replace("h_seconds_sum 0.3\n", ""),                       # no _sum
        good.replace('h_seconds_bucket{le="0.1"} 1\n',                # le not increasing
                     'h_seconds_bucket{le="0.5"} 1\nh_seconds_bucket{le="0.1"} 1\n'),
        good + "# TYPE a_total counter\n",                            # second TYPE
        good.replace("# TYPE a_total counter", "# TYPE a_total countr"),
    ]
    for text in bad:
        with pytest.raises(ExpositionError):
            Exposition(text)


# ====================================================================
# Health and readiness
# ====================================================================

def test_healthz_and_readyz_are_tiny_fast_and_open(make_twigate):
    tg = make_twigate(overrides={"metrics.token": "m" + os.urandom(8).hex()})
    s = _session()
    # Ready once the first Kaphila probe has answered, shortly after start.
    wait_for(lambda: s.get(tg.base_url + "/readyz", timeout=5).status_code == 200, 5,
             message="/readyz never became ready")
    for path, body in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
        for auth in (None, ("ACnobody", "wrong")):     # no credentials, or bad ones
            t0 = time.monotonic()
            r = s.get(tg.base_url + path, auth=auth, timeout=5)
            elapsed = time.monotonic() - t0
            assert r.status_code == 200, (path, r.status_code, r.text)
            assert r.text == body, (path, r.text)
            assert int(r.headers["Content-Length"]) < 64
            assert r.headers["Content-Type"].startswith("text/plain")
            assert "WWW-Authenticate" not in r.headers
            assert elapsed < 1.0, f"{path} took {elapsed:.3f}s"
        assert s.post(tg.base_url + path, timeout=5).status_code == 405


def test_readyz_fails_when_kaphila_is_unreachable(make_twigate, kaphila_sim):
    """Issue 7: /readyz is ready only with the database usable and Kaphila
    reachable (or the built-in simulator running)."""
    tg = make_twigate(external_sim=kaphila_sim)
    wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 200, 5,
             message="/readyz never became ready")
    kaphila_sim.kill9()
    try:
        wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 503, 6,
                 message="/readyz still 200 with Kaphila down")
        assert tg.http("GET", "/healthz", auth=None).status_code == 200, \
            "liveness must not depend on Kaphila"
    finally:
        kaphila_sim.start()
    wait_for(lambda: tg.http("GET", "/readyz", auth=None).status_code == 200, 10,
             message="/readyz did not recover with Kaphila back")


# ====================================================================
# Metrics
# ====================================================================

# Families issue 7 asks for, with their type and exact label names.
REQUIRED_FAMILIES = {
    "twigate_http_requests_total": ("counter", {"route", "status"}),
    "twigate_http_request_seconds": ("histogram", {"route"}),
    "twigate_calls_total": ("counter", {"status"}),
    "twigate_live_calls": ("gauge", set()),
    "twigate_kaphila_requests_total": ("counter", {"endpoint", "outcome"}),
    "twigate_kaphila_request_seconds": ("histogram", {"endpoint"}),
    "twigate_webhooks_total": ("counter", {"kind", "outcome"}),
    "twigate_webhook_seconds": ("histogram", {"kind"}),
    "twigate_twiml_fetch_seconds": ("histogram", set()),
    "twigate_outbox_pending": ("gauge", set()),
    "twigate_outbox_oldest_seconds": ("gauge", set()),
    "twigate_kaphila_events_total": ("counter", {"event"}),
    "twigate_notifications_total": ("counter", {"code"}),
    "twigate_sqlite_busy_total": ("counter", set()),
    "twigate_sqlite_checkpoints_total": ("counter", {"trigger"}),
    "twigate_sqlite_wal_pages": ("gauge", set()),
    "twigate_metrics_dropped_total": ("counter", set()),
}


def _scrape(tg, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = tg.http("GET", "/metrics", auth=None, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text[:200])
    ctype = r.headers.get("Content-Type", "")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    return Exposition(r.text)


def _assert_shapes(m):
    for name, fam in m.families.items():
        assert name.startswith("twigate_"), name
        assert fam["help"] and fam["help"].strip(), f"{name} has an empty HELP"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
        if fam["type"] == "histogram":
            assert name.endswith("_seconds"), f"histogram {name} should be in seconds"
            # One fixed bucket layout per family.
            layouts = {}
            for sample, labels, _ in fam["samples"]:
                if sample.endswith("_bucket"):
                    rest = frozenset((k, v) for k, v in labels.items() if k != "le")
                    layouts.setdefault(rest, []).append(labels["le"])
            assert len({tuple(v) for v in layouts.values()}) <= 1, layouts


def _assert_monotonic(before, after):
    for key in before.monotonic_series():
        assert key in after.series, f"series {key[0]}{dict(key[1])} disappeared"
        assert after.series[key] >= before.series[key], (
            f"{key[0]}{dict(key[1])} went down: {before.series[key]} -> {after.series[key]}")


def test_metrics_token(make_twigate):
    token = "mt_" + os.urandom(12).hex()
    tg = make_twigate(overrides={"metrics.token": token})
    acct = tg.accounts["a"]
    for headers, auth in (({}, None), ({"Authorization": "Bearer wrong"}, None),
                          ({"Authorization": f"Bearer {token}x"}, None),
                          ({"Authorization": token}, None),
                          ({}, (acct.sid, acct.auth_token))):
        r = tg.http("GET", "/metrics", auth=auth, headers=headers)
        assert r.status_code == 401, (headers, auth, r.status_code)
        assert "twigate_" not in r.text
    _assert_shapes(_scrape(tg, token))


@pytest.mark.parametrize("length", [504, 505, 600, 4096])
def test_long_metrics_token_is_compared_in_full(make_twigate, length):
    """Issue 16 §2: a metrics.token past 504 characters was cut short at
    comparison (a fixed 512-byte buffer for "Bearer <token>"), so any header
    with the right first 504 characters was let in. Every character counts
    now, whatever the length; the scheme is case-insensitive."""
    token = ("t" + os.urandom(length).hex())[:length]
    tg = make_twigate(overrides={"metrics.token": token})
    last = "x" if token[-1] != "x" else "y"
    bads = [token[:-1], token[:-1] + last, token + "x"]
    if length > 504:
        bads.append(token[:504] + "z" * (length - 504))   # same length, differs past 504
    for bad in bads:
        r = tg.http("GET", "/metrics", auth=None, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, (len(bad), r.status_code)
    for scheme in ("Bearer", "bearer"):
        r = tg.http("GET", "/metrics", auth=None, headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, (scheme, r.status_code)


def test_metrics_without_token_are_open(make_twigate):
    tg = make_twigate()
    _assert_shapes(_scrape(tg))


def test_call_cache_metrics_move(make_twigate):
    """The call cache's counters (docs/architecture.md), through the strict
    parser: fetches of an ended call are hits from the second one on, and
    another account's fetch of it is a miss."""
    tg = make_twigate()
    c = tg.client("a")
    sid = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML).sid
    tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    uri = lambda acct: f"{tg.account_uri(acct)}/Calls/{sid}.json"
    # Late writes to the row (recording events after the end) invalidate it;
    # wait until two fetches in a row are hits, so the deltas below are exact.
    def two_hits():
        m0 = _scrape(tg).value("twigate_call_cache_hits_total")
        for _ in range(2):
            assert tg.http("GET", uri("a")).status_code == 200
        return _scrape(tg).value("twigate_call_cache_hits_total") == m0 + 2
    wait_for(two_hits, 15, interval=0.2, message="fetches of an ended call never became hits")

    before = _scrape(tg)
    _assert_shapes(before)
    for name, kind in (("twigate_call_cache_hits_total", "counter"),
                       ("twigate_call_cache_misses_total", "counter"),
                       ("twigate_call_cache_entries", "gauge")):
        assert before.families[name]["type"] == kind, name
    assert before.value("twigate_call_cache_entries") >= 1
    for _ in range(3):
        assert tg.http("GET", uri("a")).status_code == 200
    assert tg.http("GET", uri("b"), account="b").status_code == 404
    after = _scrape(tg)
    _assert_monotonic(before, after)
    d = lambda name: after.value(name) - before.value(name)
    assert d("twigate_call_cache_hits_total") == 3
    assert d("twigate_call_cache_misses_total") == 1
    assert after.value("twigate_call_cache_entries") == before.value("twigate_call_cache_entries")


def test_checkpoints_follow_the_wal_volume(make_twigate):
    """The checkpointer runs once writers have added ~1,000 WAL pages, not
    only on its one-second timer (src/store/store.c: each pass then syncs a few MB,
    and the engine's appends do not stall behind a large sync). A burst of
    creates writes tens of pages per call: well past the step."""
    tg = make_twigate()
    before = _scrape(tg)
    assert before.families["twigate_sqlite_checkpoints_total"]["type"] == "counter"
    assert before.families["twigate_sqlite_wal_pages"]["type"] == "gauge"
    for _ in range(150):
        r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
        assert r.status_code == 201, r.text[:200]

    def by_volume():
        m = _scrape(tg)
        return m if m.value("twigate_sqlite_checkpoints_total", 0, trigger="volume") > \
            before.value("twigate_sqlite_checkpoints_total", 0, trigger="volume") else None
    after = wait_for(by_volume, 10, interval=0.2,
                     message="no checkpoint was started by the WAL's growth")
    _assert_shapes(after)
    _assert_monotonic(before, after)
    # The timer keeps running beside it, and the gauge reads the WAL's length.
    wait_for(lambda: _scrape(tg).value("twigate_sqlite_checkpoints_total", 0, trigger="timer")
             >= 1, 5, message="the one-second checkpoint timer never ran")
    # The counter moves when a pass starts, the gauge when it has finished
    # (src/store.c: the mark is stored after sqlite3_wal_checkpoint_v2), so a
    # scrape between the two - a slow sync on a loaded machine - still shows
    # the previous pass's length: wait for the volume pass to land.
    wait_for(lambda: _scrape(tg).value("twigate_sqlite_wal_pages") > 0, 10, interval=0.1,
             message="the WAL-length gauge never showed the volume pass")


def test_timer_lateness_histogram(make_twigate):
    """Each engine timer that fires (here a <Pause>) is observed in
    twigate_timer_lateness_seconds, due time to firing."""
    tg = make_twigate()
    c = tg.client("a")
    before = _scrape(tg)
    call = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM,
                          twiml='<Response><Pause length="1"/><Hangup/></Response>')
    tg.wait_for_status(c, call.sid, TERMINAL, timeout=15)
    after = _scrape(tg)
    _assert_shapes(after)
    fam = after.families["twigate_timer_lateness_seconds"]
    assert fam["type"] == "histogram", fam["type"]
    n = after.value("twigate_timer_lateness_seconds_count") - \
        before.value("twigate_timer_lateness_seconds_count", 0)
    late = after.value("twigate_timer_lateness_seconds_sum") - \
        before.value("twigate_timer_lateness_seconds_sum", 0)
    assert n >= 1, "the Pause's timer was not observed"
    # A lateness is what is left after the due time, not the Pause itself.
    assert 0 <= late < 0.5 * n, (late, n)
    _assert_monotonic(before, after)


def test_metrics_move_with_the_workload(make_twigate, receiver):
    token = "mt_" + os.urandom(12).hex()
    tg = make_twigate(overrides={"metrics.token": token})
    acct = tg.accounts["a"]
    c = tg.client("a")
    dead = f"http://127.0.0.1:{free_port()}/gone"
    receiver.set("/voice", SHORT_TWIML)
    receiver.set("/slowstatus", delay=0.6)

    before = _scrape(tg, token)
    _assert_shapes(before)
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        if name in before.families:
            assert before.families[name]["type"] == kind, (name, before.families[name]["type"])

    created = []
    # Callbacks held up by a slow receiver: the outbox has rows pending.
    slow = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                          status_callback=receiver.url("/slowstatus"),
                          status_callback_event=ALL_EVENTS)
    created.append(slow.sid)
    receiver.wait_for_requests("/slowstatus", 1, call_sid=slow.sid)
    mid = _scrape(tg, token)
    assert mid.value("twigate_outbox_pending") >= 1, "outbox_pending while deliveries wait"
    assert mid.value("twigate_outbox_oldest_seconds") > 0

    for _ in range(3):
        created.append(c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                                      status_callback=receiver.url("/status"),
                                      status_callback_event=ALL_EVENTS).sid)
    with_url = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, url=receiver.url("/voice"),
                              status_callback=receiver.url("/status"))
    created.append(with_url.sid)
    busy_dead = c.calls.create(to=fresh_number("0001"), from_=DEFAULT_FROM, twiml=SHORT_TWIML,
                               status_callback=dead)
    created.append(busy_dead.sid)
    live = c.calls.create(to=fresh_number(), from_=DEFAULT_FROM, twiml=LIVE_TWIML)
    created.append(live.sid)
    tg.wait_for_status(c, live.sid, "in-progress")
    assert _scrape(tg, token).value("twigate_live_calls") >= 1
    c.calls(live.sid).update(status="completed")

    # One 401, and one 429 from Kaphila: the dial waits and goes again
    # (issue 19), so the create is a 201 like the others.
    r = tg.http("GET", tg.account_uri("a") + "/Calls.json", auth=(acct.sid, "not-the-token"))
    assert r.status_code == 401
    tg.sim_fail(429, endpoint="/makecall")
    r = tg.create_call_raw(To=fresh_number(), From=DEFAULT_FROM, Twiml=SHORT_TWIML)
    assert r.status_code == 201, r.text
    created.append(r.json()["sid"])

    for sid in created:
        tg.wait_for_status(c, sid, TERMINAL, timeout=15)
    n_status = 4 * 4 + 1          # slow + 3 with every event, with_url's completed
    wait_for(lambda: len(receiver.requests("/status")) + len(receiver.requests("/slowstatus"))
             >= n_status, 15, message="status callbacks")
    n_created = len(created)
    answered = n_created - 1      # all but the busy one

    def settled():
        m = _scrape(tg, token)
        d = lambda name, **l: m.value(name, 0, **l) - before.value(name, 0, **l)
        checks = {
            "calls_create 201": (d("twigate_http_requests_total", route="calls_create",
                                   status="201"), n_created),
            "calls_create 429": (d("twigate_http_requests_total", route="calls_create",
                                   status="429"), 0),
            "calls_list 401": (d("twigate_http_requests_total", route="calls_list",
                                 status="401"), 1),
            "calls completed": (d("twigate_calls_total", status="completed"), answered),
            "calls busy": (d("twigate_calls_total", status="busy"), 1),
            "calls in-progress": (d("twigate_calls_total", status="in-progress"), answered),
            "live calls": (m.value("twigate_live_calls"), 0),
            "makecall ok": (d("twigate_kaphila_requests_total", endpoint="/makecall",
                              outcome="ok"), n_created),
            "makecall 429": (m.total("twigate_kaphila_429_total", endpoint="/makecall") -
                             before.total("twigate_kaphila_429_total", endpoint="/makecall"), 1),
            "status webhooks ok": (d("twigate_webhooks_total", kind="status", outcome="0"),
                                   n_status),
            "status webhooks 11205": (d("twigate_webhooks_total", kind="status",
                                        outcome="11205"), 1),
            "twiml fetch ok": (d("twigate_webhooks_total", kind="twiml", outcome="0"), 1),
            "twiml fetch timing": (d("twigate_twiml_fetch_seconds_count"), 1),
            "notification 11205": (d("twigate_notifications_total", code="11205"), 1),
            "events call.initiated": (d("twigate_kaphila_events_total",
                                        event="call.initiated"), n_created),
            "events call.answered": (d("twigate_kaphila_events_total",
                                       event="call.answered"), answered),
            "events call.ended": (d("twigate_kaphila_events_total", event="call.ended"),
                                  n_created),
            "outbox pending": (m.value("twigate_outbox_pending"), 0),
            "outbox oldest": (m.value("twigate_outbox_oldest_seconds"), 0),
            "dropped series": (m.value("twigate_metrics_dropped_total"), 0),
        }
        bad = {k: v for k, v in checks.items() if v[0] != v[1]}
        settled.last = (m, bad)
        return m if not bad else None

    try:
        after = wait_for(settled, 15)
    except AssertionError:
        m, bad = settled.last
        raise AssertionError("metrics did not reach the expected values "
                             "(name: (got, expected)): " + repr(bad))
    _assert_shapes(after)
    _assert_monotonic(before, after)
    _assert_monotonic(mid, after)

    missing = [n for n in REQUIRED_FAMILIES if n not in after.families]
    assert not missing, f"metric families issue 7 asks for are missing: {missing}"
    for name, (kind, labels) in REQUIRED_FAMILIES.items():
        fam = after.families[name]
        assert fam["type"] == kind, (name, fam["type"], kind)
        for sample, got, _ in fam["samples"]:
            assert set(got) - {"le"} == labels, (sample, got, labels)

    # Latency histograms count exactly what the counters count.
    for route in ("calls_create", "calls_list", "call_fetch", "call_update"):
        assert after.value("twigate_http_request_seconds_count", route=route) == \
            after.total("twigate_http_requests_total", route=route), route
    for labels, _ in after.samples("twigate_kaphila_request_seconds_count"):
        ep = labels["endpoint"]
        assert after.value("twigate_kaphila_request_seconds_count", endpoint=ep) == \
            after.total("twigate_kaphila_requests_total", endpoint=ep), ep
    assert after.value("twigate_webhook_seconds_count", kind="status") == \
        after.total("twigate_webhooks_total", kind="status")
    assert after.value("twigate_http_request_seconds_sum", route="calls_create") > 0
    assert after.value("twigate_sqlite_busy_total") >= 0
    # Hang-ups (the REST one and the end-of-TwiML ones) are counted too.
    assert after.total("twigate_kaphila_requests_total", endpoint="/hangup") >= 1


# ====================================================================
# Logs
# ====================================================================

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
    s = _session()
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
    mark = _reload(tg, dict(tg.settings, **{"sim.admin_token": new_admin}))
    _wait_log(tg, r"SIGHUP.*sim\.admin_token", mark)
    mark = _reload(tg, dict(tg.settings, **{"account.b.auth_token": new_token}))
    _wait_log(tg, r"configuration reloaded", mark)
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
    tg.proc = subprocess.Popen([_binary("twigate"), "--config", tg.config_path],
                               stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               cwd=tg.workdir, env=_child_env())
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
    _wait_log(tg, r"configuration reloaded", mark)
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


# ====================================================================
# SIGHUP: reload
# ====================================================================

def _reload(tg, settings, extra_text=""):
    """Writes settings (plus raw extra_text) as the config file and sends
    SIGHUP; returns the log offset before the signal."""
    mark = len(tg.log_text())
    with open(tg.config_path, "w", encoding="utf-8") as f:
        f.write(render_config(settings) + extra_text)
    tg.proc.send_signal(signal.SIGHUP)
    return mark


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
    mark = _reload(tg, _with_account(tg.settings, new, "c"))
    _wait_log(tg, r"configuration reloaded \(3 accounts\)", mark)
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
    mark = _reload(tg, _without_account(_with_account(tg.settings, new, "c"), "b"))
    _wait_log(tg, r"configuration reloaded \(2 accounts\)", mark)
    wait_for(lambda: _status(tg, b) == 401, 5, message="removed account still accepted")
    assert _status(tg, tg.accounts["a"]) == 200
    assert _status(tg, new) == 200


def test_sighup_added_account_can_call_on_the_builtin_simulator(make_twigate, new_account):
    """With kaphila.url = sim (make run), the simulator's keys come from the
    accounts: an account added by SIGHUP must be able to place calls too."""
    tg = make_twigate()
    mark = _reload(tg, _with_account(tg.settings, new_account, "c"))
    _wait_log(tg, r"configuration reloaded", mark)
    r = tg.http("POST", f"/2010-04-01/Accounts/{new_account.sid}/Calls.json",
                auth=(new_account.sid, new_account.auth_token),
                data={"To": fresh_number(), "From": DEFAULT_FROM, "Twiml": SHORT_TWIML})
    assert r.status_code == 201, r.text


def test_sighup_rotates_a_token_and_the_metrics_token(make_twigate, receiver):
    tg = make_twigate(overrides={"metrics.token": "old-metrics-token"})
    a = tg.accounts["a"]
    new_token = os.urandom(16).hex()
    mark = _reload(tg, dict(tg.settings, **{"account.a.auth_token": new_token,
                                            "metrics.token": "new-metrics-token"}))
    _wait_log(tg, r"configuration reloaded", mark)
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
    mark = _reload(tg, dict(tg.settings, **{"metrics.token": "new-metrics-token"}))
    _wait_log(tg, r"configuration reloaded", mark)


def test_sighup_invalid_file_keeps_the_old_config(make_twigate, new_account):
    tg = make_twigate()
    a, b = tg.accounts["a"], tg.accounts["b"]
    # A typo'd key, plus an account that must not be applied with it.
    bad = _with_account(tg.settings, new_account, "c")
    mark = _reload(tg, bad, "\n[listen]\nprot = 8081\n")
    line = _wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "ERROR" in line and "listen.prot" in line and "twigate.conf:" in line, line
    assert "keeping the old" in line, line
    assert _status(tg, a) == 200 and _status(tg, b) == 200
    assert _status(tg, new_account) == 401, "part of a refused file was applied"
    assert tg.running and tg.healthz().status_code == 200
    # An account without its auth_token is refused as a whole too.
    broken = _with_account(tg.settings, new_account, "c")
    del broken["account.c.auth_token"]
    mark = _reload(tg, broken)
    line = _wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "account.c" in line, line
    assert _status(tg, new_account) == 401 and _status(tg, a) == 200
    # A good file after the bad ones applies.
    mark = _reload(tg, _with_account(tg.settings, new_account, "c"))
    _wait_log(tg, r"configuration reloaded \(3 accounts\)", mark)
    wait_for(lambda: _status(tg, new_account) == 200, 5)


def test_sighup_refuses_keys_that_need_a_restart(make_twigate, new_account):
    tg = make_twigate()
    a = tg.accounts["a"]
    other_port = free_port()
    mark = _reload(tg, _with_account(dict(tg.settings, **{"listen.port": other_port}),
                                     new_account, "c"))
    line = _wait_log(tg, r".*SIGHUP.*", mark).group(0)
    assert "listen.port" in line and "restart" in line, line
    assert str(tg.port) in line and str(other_port) in line, line
    # The refusal's log line is the barrier: the reload was decided.
    assert _status(tg, a) == 200, "the old port stopped serving"
    assert _status(tg, new_account) == 401, "an account was added by a refused reload"
    with pytest.raises(requests.ConnectionError):
        _session().get(f"http://127.0.0.1:{other_port}/healthz", timeout=2)
    # A refused secret is named, never shown.
    mark = _reload(tg, dict(tg.settings, **{"sim.admin_token": "s3cr3t-admin"}))
    line = _wait_log(tg, r".*SIGHUP.*", mark).group(0)
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
    _wait_log(tg, r"signal 15: draining", mark)
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
    # The gauge alone can read 0 just before the reconciler finishes the calls
    # the restart found dead and writes their callbacks: the rows decide too.
    def drained():
        r = tg.http("GET", "/metrics", auth=None)
        return (r.status_code == 200 and Exposition(r.text).value("twigate_outbox_pending") == 0
                and not _db_rows(tg.db_path, "SELECT 1 FROM outbox WHERE kind = 'status'"
                                             " AND state != 'done' LIMIT 1"))
    wait_for(drained, timeout, message="the outbox did not drain after the restart")
    rows = _db_rows(tg.db_path, "SELECT call_sid, seq, idem, state, attempts FROM outbox"
                                " WHERE kind = 'status'")
    assert rows, "no status callbacks were written"
    failed = [r for r in rows if r[3] != "done"]
    notes = _db_rows(tg.db_path, "SELECT call_sid, error_code, message_text FROM notifications"
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
    s = _session()
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
    pending = _db_rows(tg.db_path, "SELECT count(*) FROM outbox WHERE state = 'pending'")[0][0]
    failed = _db_rows(tg.db_path, "SELECT state, attempts FROM outbox WHERE state != 'pending'"
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


# ====================================================================
# make install, the man page, the command line
# ====================================================================

def _make_install(destdir, prefix=None):
    args = ["make", "-s", "-C", str(REPO_ROOT), "-o", "all", "install",
            f"BUILD={build_dir()}", f"DESTDIR={destdir}"]
    if prefix:
        args.append(f"PREFIX={prefix}")
    # -o all: install what the test run is using, never rebuild it here.
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"make install failed:\n{r.stdout}\n{r.stderr}"


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
@pytest.mark.parametrize("prefix,base", [("/usr", "usr"), (None, "usr/local")])
def test_make_install_layout(tmp_path, prefix, base):
    dest = tmp_path / "root"
    _make_install(dest, prefix)
    want = {f"{base}/sbin/twigate": 0o755, f"{base}/bin/kaphila-sim": 0o755,
            "etc/twigate/twigate.conf.sample": 0o644,
            f"{base}/share/man/man8/twigate.8": 0o644}
    for rel, mode in want.items():
        p = dest / rel
        assert p.is_file(), f"make install did not install /{rel}"
        assert p.stat().st_mode & 0o777 == mode, (rel, oct(p.stat().st_mode))
    assert (dest / "etc/twigate/twigate.conf.sample").read_bytes() == \
        (REPO_ROOT / "conf/twigate.conf").read_bytes()
    assert (dest / f"{base}/share/man/man8/twigate.8").read_bytes() == \
        (REPO_ROOT / "docs/twigate.8").read_bytes()
    installed = dest / f"{base}/sbin/twigate"
    r = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("twigate "), r
    r = subprocess.run([str(installed), "--config", str(dest / "etc/twigate/twigate.conf.sample"),
                        "--print-config"], capture_output=True, text=True, timeout=10,
                       env=_child_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(dest / f"{base}/bin/kaphila-sim"), "--help"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r


def test_man_page_renders_without_warnings(tmp_path):
    page = str(REPO_ROOT / "docs/twigate.8")
    renderers = []
    if shutil.which("groff"):
        renderers.append(["groff", "-man", "-Tutf8", "-ww", "-z", page])
    if shutil.which("man"):
        renderers.append(["man", "--warnings", "-l", page])
    if not renderers:
        pytest.skip("neither groff nor man is installed: the man page was not rendered")
    for argv in renderers:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat",
                                    LC_ALL="C.UTF-8"))
        assert r.returncode == 0 and r.stderr.strip() == "", f"{argv[0]}: {r.stderr}"
    # Wide lines and no hyphenation, so words are not split for the search.
    text = subprocess.run(["groff", "-man", "-Tutf8", "-rHY=0", "-rLL=250n", page]
                          if shutil.which("groff") else ["man", "-l", page],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MANPAGER="cat", MANWIDTH="250",
                                   LC_ALL="C.UTF-8")).stdout
    text = re.sub(r".\x08", "", text).replace("\u2010", "-").replace("\u2212", "-")
    text = re.sub(r"\s+", " ", text)
    for word in ("--config", "--set", "--print-config", "--help", "--version", "SIGTERM",
                 "SIGHUP", "shutdown.grace_ms", "/etc/twigate/twigate.conf"):
        assert word in text, f"the man page does not mention {word}"


def _run(args, env=None, timeout=15):
    return subprocess.run([_binary("twigate")] + args, capture_output=True, text=True,
                          timeout=timeout, env=_child_env(**(env or {})))


def test_cli_help_and_version():
    r = _run(["--version"])
    assert r.returncode == 0 and re.fullmatch(r"twigate \d+\.\d+\.\d+\n", r.stdout), r
    r = _run(["--help"])
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout.startswith("usage: twigate"), r.stdout[:200]
    keys = re.findall(r"^  ([a-z_<>.-]+)  (?:string|int|bool|secret|time)", r.stdout, re.M)
    for key in ("public_url", "listen.port", "db.path", "kaphila.url", "log.level", "log.json",
                "metrics.token", "shutdown.grace_ms", "account.<name>.auth_token"):
        assert key in keys, f"--help does not list {key}"
    # Every key of the sample configuration is documented by --help.
    sample = _run(["--config", str(REPO_ROOT / "conf/twigate.conf"), "--print-config"])
    assert sample.returncode == 0, sample.stderr
    section = ""
    for line in sample.stdout.splitlines():
        m = re.fullmatch(r"\[([a-z0-9_.-]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.fullmatch(r"([a-z0-9_]+) = .*", line)
        if m:
            key = f"{section}.{m.group(1)}" if section else m.group(1)
            key = re.sub(r"^account\.[^.]+\.", "account.<name>.", key)
            assert key in keys, f"{key} is in the configuration but not in --help"


def test_cli_print_config_masks_every_secret(tmp_path):
    a = make_accounts()["a"]
    secrets_ = {"auth": a.auth_token, "kkey": a.kaphila_key, "apis": a.api_key_secret,
                "mtok": "mt_" + os.urandom(8).hex(), "adm": "adm_" + os.urandom(8).hex()}
    conf = tmp_path / "t.conf"
    conf.write_text(render_config({
        "account.x.sid": a.sid, "account.x.auth_token": secrets_["auth"],
        "account.x.kaphila_key": secrets_["kkey"], "account.x.api_key_sid": a.api_key_sid,
        "account.x.api_key_secret": secrets_["apis"], "metrics.token": secrets_["mtok"]}))
    r = _run(["--config", str(conf), "--print-config"],
             env={"TWIGATE_SIM_ADMIN_TOKEN": secrets_["adm"]})
    assert r.returncode == 0, r.stderr
    for name, value in secrets_.items():
        assert value not in r.stdout + r.stderr, f"--print-config shows the {name} secret"
    for key in ("auth_token", "kaphila_key", "api_key_secret", "token", "admin_token"):
        assert re.search(rf"^{key} = \"\*+\"$", r.stdout, re.M), f"{key} not masked"
    assert a.sid in r.stdout and a.api_key_sid in r.stdout, "SIDs are not secrets"
    # The output is itself a loadable configuration that prints the same.
    again = tmp_path / "again.conf"
    again.write_text(r.stdout)
    r2 = _run(["--config", str(again), "--print-config"])
    assert r2.returncode == 0 and r2.stdout == r.stdout, r2.stderr


@pytest.mark.parametrize("text,env,args,must", [
    ("[listen]\nport = 70000\n", {}, [], ["t.conf:2", "listen.port", "70000"]),
    ("[listen]\nprot = 1\n", {}, [], ["t.conf:2", "listen.prot", "listen.port"]),
    ("[log]\njson = maybe\n", {}, [], ["t.conf:2", "log.json"]),
    ("[bogus]\nx = 1\n", {}, [], ["t.conf:1", "bogus"]),
    ("", {"TWIGATE_LISTEN_PORT": "abc"}, [], ["TWIGATE_LISTEN_PORT", "listen.port"]),
    ("", {"TWIGATE_LISTEN_PROT": "1"}, [], ["TWIGATE_LISTEN_PROT"]),
    ("", {}, ["--set", "listen.threads=0"], ["listen.threads"]),
    ("", {}, ["--set", "nonsense"], ["nonsense"]),
    ("[account.x]\nsid = ACxyz\nauth_token = t\nkaphila_key = k\n", {}, [],
     ["account.x.sid", "ACxyz"]),
])
def test_cli_bad_configuration_is_one_clear_line(tmp_path, text, env, args, must):
    a = make_accounts()["a"]
    conf = tmp_path / "t.conf"
    base = "" if "account." in text else (
        f"[account.ok]\nsid = {a.sid}\nauth_token = {a.auth_token}\nkaphila_key = k\n")
    # The broken part first, so line numbers in `must` hold.
    conf.write_text(text + base)
    r = _run(["--config", str(conf)] + args, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stdout == "", r.stdout
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got {lines}"
    for word in must:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert a.auth_token not in r.stderr


def test_cli_errors_never_echo_a_secret(tmp_path):
    sid = "AC" + os.urandom(16).hex()
    secret = "sec" + os.urandom(12).hex()
    for bad_line in (f'auth_token = "{secret}', f'auth_token = "{secret}" junk',
                     f"auth_token = {secret}\x01"):
        conf = tmp_path / "s.conf"
        conf.write_text(f"[account.x]\nsid = {sid}\n{bad_line}\nkaphila_key = k\n")
        r = _run(["--config", str(conf)])
        assert r.returncode == 2, r
        assert "s.conf:3" in r.stderr, r.stderr
        assert secret not in r.stderr, r.stderr
    r = _run(["--config", str(REPO_ROOT / "conf/twigate.conf")],
             env={"TWIGATE_METRICS_TOKEN": f"{secret}\x01"})
    assert r.returncode == 2 and "TWIGATE_METRICS_TOKEN" in r.stderr and secret not in r.stderr


# ====================================================================
# Container and systemd packaging (no Docker engine here)
# ====================================================================

def test_check_docker_script():
    script = REPO_ROOT / "scripts/check-docker.sh"
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, TWIGATE_BUILD=build_dir()))
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"check-docker.sh failed:\n{out}"
    assert "FAIL" not in out, out
    for section in ("== Dockerfile", "== apt packages", "== libraries", "== make install",
                    "== entrypoint", "== systemd unit", "== not checked on this machine"):
        assert section in out, f"{section} missing:\n{out}"
    assert "docker build" in out.split("== not checked on this machine")[1]
    assert re.search(r"^ok +it execs twigate", out, re.M), out
