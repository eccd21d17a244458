"""The store's conformance suite on PostgreSQL (issue 21 step 2;
docs/scale-out.md §1): the cmocka binaries that `make unit` runs on SQLite
(tests/unit/store/test_store_conformance*.c, through store.h and recstore.h
only) run again with TWIGATE_TEST_DB_URL naming a fresh database on a real
PostgreSQL 15, and must pass the same way. A second run on the same database
proves the suite's rows do not collide with an earlier run's and that the
migrations find the schema current. Skipped, with the reason, where
PostgreSQL is missing."""

import os
import subprocess

import pytest

BUILD = os.environ.get("TWIGATE_BUILD", "build")
SUITES = ("store/test_store_conformance", "store/test_store_conformance_logs")


def _run(binary, url):
    path = os.path.join(BUILD, "tests", binary)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built: make unit")
    env = dict(os.environ, TWIGATE_TEST_DB_URL=url)
    return subprocess.run([path], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("binary", SUITES)
def test_conformance_suite_passes_on_postgresql(binary, pg_url):
    for attempt in (1, 2):
        out = _run(binary, pg_url)
        assert out.returncode == 0, (attempt, out.stdout[-4000:], out.stderr[-4000:])
        text = out.stdout + out.stderr           # cmocka's summary is on stderr
        assert "[  PASSED  ]" in text and "FAILED" not in text, text[-4000:]
        assert "[       OK ]" in out.stdout


def test_schema_version_matches_sqlites(postgres, pg_url):
    """PostgreSQL's schema is at SQLite's version (5), with every table of it."""
    out = _run(SUITES[0], pg_url)
    assert out.returncode == 0, out.stdout[-4000:]
    version = postgres.psql("SELECT version, min_compatible FROM schema_version", url=pg_url)
    assert version.strip() == "5|1", version
    tables = postgres.psql("SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables"
                           " WHERE schemaname = 'public'", url=pg_url)
    assert tables.strip() == ("account_keys,call_checkpoints,call_events,calls,kevents,"
                              "notifications,outbox,recordings,schema_version"), tables
