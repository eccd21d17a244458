"""pytest fixtures for twigate's integration tests.

  accounts            session: two accounts "a" (with an SK API key) and "b",
                      random SIDs/tokens, shared by every daemon of the run
  twigate             module: a daemon with the built-in simulator in fast mode
  make_twigate        function: factory make_twigate(overrides={}, external_sim=None)
  make_twigate_module module: the same factory, for module fixtures with
                      their own configuration
  kaphila_sim         function: a started standalone build/kaphila-sim
  twigate_ext         function: a daemon driving that external kaphila-sim
                      (so twigate can be restarted while calls live on)
  receiver            function: a WebhookReceiver validating signatures with
                      the accounts' tokens
  client, client_b    the twilio-python Client of account a / b on `twigate`
  postgres            session: a PostgresServer (harness/pg.py), skipped with
                      the reason when PostgreSQL 15 or psycopg2 is missing
  pg_url              function: the URL of a fresh database on `postgres`
  make_haproxy        function: factory make_haproxy(backends, start=True, **kw)
                      of HAProxy instances (harness/haproxy.py)

TWIGATE_TEST_DB=postgresql runs every twigate these factories start on a
fresh database of the session's PostgreSQL (db.url) instead of SQLite, unless
the test sets db.url or db.path itself: every suite runs on the PostgreSQL
backend that way (make check's third pass; docs/scale-out.md, step 2).
Tests read rows under the API through harness/db.py, on either backend;
the few about SQLite itself are marked harness.db.sqlite_only.

Every daemon is stopped with SIGTERM at teardown and must exit 0 with no
sanitizer report in its log."""

import os

import pytest

from harness import KaphilaSim, Twigate, WebhookReceiver, make_accounts
from harness import haproxy as _haproxy
from harness import pg as _pg

# The SDK rewrites the host when a region/edge is set, and requests honours
# proxies from the environment; neither may touch 127.0.0.1.
for _k in ("TWILIO_REGION", "TWILIO_EDGE"):
    os.environ.pop(_k, None)
for _k in ("NO_PROXY", "no_proxy"):
    _cur = os.environ.get(_k, "")
    os.environ[_k] = ",".join(x for x in (_cur, "127.0.0.1,localhost") if x)


class _Pool:
    def __init__(self, tmp_path_factory, accounts, label, request=None):
        self._tmp = tmp_path_factory
        self._accounts = accounts
        self._label = label
        self._request = request
        self.procs = []

    def twigate(self, overrides=None, external_sim=None, accounts=None, start=True,
                extra_args=()):
        if (os.environ.get("TWIGATE_TEST_DB") == "postgresql" and self._request
                and not {"db.url", "db.path"} & set(overrides or {})):
            overrides = dict(overrides or {},
                             **{"db.url": self._request.getfixturevalue("postgres")
                                .fresh_database()})
        tg = Twigate(self._tmp.mktemp(self._label), accounts or self._accounts,
                     overrides=overrides, external_sim=external_sim,
                     extra_args=extra_args)
        self.procs.append(tg)
        if start:
            tg.start()
        return tg

    def kaphila_sim(self, keys=None, **kw):
        keys = keys or [a.kaphila_key for a in self._accounts.values()]
        sim = KaphilaSim(self._tmp.mktemp("kaphila-sim"), keys, **kw)
        self.procs.append(sim)
        sim.start()
        return sim

    def close(self):
        errors = []
        # Twigate first, then the simulators it talks to.
        for p in sorted(self.procs, key=lambda p: isinstance(p, KaphilaSim)):
            if isinstance(p, Twigate) and p.running:
                p.end_live_calls()
            try:
                p.stop()
            except AssertionError as e:
                errors.append(str(e))
        self.procs.clear()
        if errors:
            pytest.fail("daemon teardown failed:\n" + "\n\n".join(errors), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the tail of every daemon it started
    (twigates and simulators, DEBUG lines included): CI runs in a clone that
    is deleted afterwards, and a failure seen only under its load must be
    readable from the report alone."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for name in ("make_twigate", "make_twigate_module"):
        pool = getattr(item.funcargs.get(name), "__self__", None)
        for p in getattr(pool, "procs", []):
            rep.sections.append((f"log of {type(p).__name__} {p.workdir} (last 150 lines)",
                                 p.log_tail(150)))


@pytest.fixture(scope="session")
def accounts():
    return make_accounts()


@pytest.fixture(scope="module")
def make_twigate_module(tmp_path_factory, accounts, request):
    pool = _Pool(tmp_path_factory, accounts, "twigate", request)
    yield pool.twigate
    pool.close()


@pytest.fixture(scope="module")
def twigate(make_twigate_module):
    return make_twigate_module()


@pytest.fixture
def make_twigate(tmp_path_factory, accounts, request):
    pool = _Pool(tmp_path_factory, accounts, "twigate-fn", request)
    yield pool.twigate
    pool.close()


@pytest.fixture
def kaphila_sim(tmp_path_factory, accounts):
    pool = _Pool(tmp_path_factory, accounts, "sim")
    yield pool.kaphila_sim()
    pool.close()


@pytest.fixture
def twigate_ext(kaphila_sim, make_twigate):
    # kaphila_sim first, so twigate is torn down before its Kaphila.
    return make_twigate(external_sim=kaphila_sim)


@pytest.fixture
def receiver(accounts):
    r = WebhookReceiver({a.sid: a.auth_token for a in accounts.values()})
    yield r
    r.close()
    # Safety net: whatever a test asserted, every webhook twigate sent must
    # carry a signature the SDK's RequestValidator accepts.
    r.assert_all_valid()


@pytest.fixture
def client(twigate):
    return twigate.client("a")


@pytest.fixture
def client_b(twigate):
    return twigate.client("b")


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    reason = _pg.unavailable_reason()
    if reason:
        pytest.skip(reason)
    server = _pg.PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        server.start()
    except BaseException:
        server.kill()          # whatever start left running; its error is the one to see
        raise
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres):
    return postgres.fresh_database()


@pytest.fixture
def make_haproxy(tmp_path_factory):
    reason = _haproxy.unavailable_reason()
    if reason:
        pytest.skip(reason)
    started = []

    def make(backends, start=True, **kw):
        lb = _haproxy.HAProxy(tmp_path_factory.mktemp("haproxy"), backends, **kw)
        started.append(lb)
        return lb.start() if start else lb
    yield make
    for lb in started:
        lb.stop()
